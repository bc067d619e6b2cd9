/**
 * Peer (b): the usual Node choice. A Socket.IO server using rooms, no storage,
 * websocket transport only: `send` event -> the group's next seq ->
 * `io.to(group).emit('message', ...)` (Socket.IO encodes a broadcast once) and
 * an `ack` event to the sender.
 */
import http from 'node:http';
import { Server } from 'socket.io';
import { announce, controlHandler, groupsByUser, onSignals, peerMessage, portArg, type Membership, type PeerSend } from './peer-common.js';

let membership: Membership = new Map();
let byUser = new Map<string, string[]>();
const seqs = new Map<string, number>();

const control = controlHandler((m) => {
  membership = m;
  byUser = groupsByUser(m);
});
const server = http.createServer();
server.on('request', (req, res) => {
  if (req.url?.startsWith('/socket.io/')) return; // handled by socket.io
  if (!control(req, res)) res.writeHead(404).end();
});
const ioServer = new Server(server, { transports: ['websocket'], perMessageDeflate: false, serveClient: false });

type SendEvent = PeerSend;

ioServer.on('connection', (socket) => {
  const user = String((socket.handshake.auth as { user_id?: unknown }).user_id ?? '');
  const groups = byUser.get(user) ?? [];
  void socket.join(groups);
  socket.emit('ready');
  socket.on('send', (f: SendEvent) => {
    if (!f?.group_id || !membership.get(f.group_id)?.includes(user)) {
      socket.emit('error_frame', { type: 'error', code: 'FORBIDDEN', message: 'not a member' });
      return;
    }
    const message = peerMessage(f.group_id, f, user, seqs);
    socket.emit('ack', { type: 'ack', client_msg_id: f.client_msg_id ?? null, data: message });
    ioServer.to(f.group_id).emit('message', { type: 'message', data: message });
  });
});

server.listen(portArg(), '127.0.0.1', () => {
  const a = server.address();
  announce(typeof a === 'object' && a ? a.port : 0);
});
onSignals(() => {
  ioServer.disconnectSockets(true);
  void ioServer.close();
  setTimeout(() => process.exit(0), 1000).unref();
});
