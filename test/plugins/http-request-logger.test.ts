import t from 'tap';
import { ContextLogger, withContext, type Logger } from '../../kernel/logger.js';
import { recordingLogger, type LogLine } from '../helpers/logger.js';

/** A recording logger at `level` that counts the children made from it. */
function base(level: string): { logger: Logger; lines: LogLine[]; children: () => number } {
  const lines: LogLine[] = [];
  const rec = recordingLogger(lines);
  let children = 0;
  const logger: Logger = {
    ...rec,
    level,
    child: (b) => {
      children += 1;
      return rec.child(b);
    },
  };
  return { logger, lines, children: () => children };
}

t.test('request logger: one child per request, with req_id and user_id', async (t) => {
  const b = base('info');
  const log = new ContextLogger(b.logger, { req_id: 'req-1' });
  log.setUser('p1');
  log.info({ marker: 'handler' }, 'handler line');
  log.info({ method: 'GET', status: 200 }, 'request');
  t.equal(b.children(), 1, 'one child for every line of the request');
  t.match(b.lines, [
    { level: 'info', req_id: 'req-1', user_id: 'p1', marker: 'handler', msg: 'handler line' },
    { level: 'info', req_id: 'req-1', user_id: 'p1', method: 'GET', status: 200, msg: 'request' },
  ]);
  log.warn('plain text');
  t.match(b.lines[2], { level: 'warn', req_id: 'req-1', user_id: 'p1', msg: 'plain text' }, 'a message without fields');
  t.equal(log.level, 'info', 'the level is the base logger’s');
});

t.test('request logger: no child for lines below the level', async (t) => {
  const b = base('warn');
  const log = new ContextLogger(b.logger, { req_id: 'req-2' });
  log.setUser('p2');
  log.info({ status: 200 }, 'request');
  log.debug('details');
  t.equal(b.children(), 0, 'nothing written, no child made');
  t.same(b.lines, []);
  log.error({ route: '/x' }, 'request failed');
  t.equal(b.children(), 1);
  t.match(b.lines, [{ level: 'error', req_id: 'req-2', user_id: 'p2', route: '/x', msg: 'request failed' }]);

  const silent = base('silent');
  new ContextLogger(silent.logger, { req_id: 'req-3' }).fatal('never');
  t.equal(silent.children(), 0, 'silent writes nothing');
  t.same(silent.lines, []);
});

t.test('request logger: a line before the token is verified has req_id only; later lines add user_id', async (t) => {
  const b = base('trace');
  const log = new ContextLogger(b.logger, { req_id: 'req-4' });
  log.trace({ step: 1 }, 'before auth');
  log.setUser('doc1');
  log.info({ step: 2 }, 'after auth');
  t.match(b.lines, [
    { level: 'trace', req_id: 'req-4', step: 1 },
    { level: 'info', req_id: 'req-4', user_id: 'doc1', step: 2 },
  ]);
  t.notOk('user_id' in b.lines[0]!, 'no user_id before it is known');
  const sub = log.child({ component: 'x' });
  sub.info('from a child');
  t.match(b.lines[2], { req_id: 'req-4', user_id: 'doc1', component: 'x', msg: 'from a child' }, 'children keep both ids');
});

t.test('context logger: withContext binds only when there is a context', async (t) => {
  const b = base('info');
  t.equal(withContext(b.logger, undefined), b.logger, 'no context: the logger itself');
  withContext(b.logger, { conn: 7, user_id: 'u7' }).warn({ code: 'X' }, 'refused');
  t.match(b.lines, [{ level: 'warn', conn: 7, user_id: 'u7', code: 'X', msg: 'refused' }]);
});
