import t from 'tap';
import { MemoryStorage } from '../../../adapters/storage/memory/memory.storage.js';
import { storageContract } from '../../contracts/storage.contract.js';

await storageContract(t, 'memory', async () => new MemoryStorage());
