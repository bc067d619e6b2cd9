/**
 * Peer (a): the physical ceiling for Node. A bare `ws` fan-out server with no
 * storage and no auth that speaks the same frames as the service (API.md §5):
 * `send` -> assign the group's next seq, serialise the `message` frame ONCE
 * into a Buffer, write it to every member socket, ack the sender.
 */
import http from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import { announce, controlHandler, groupsByUser, onSignals, peerMessage, portArg, type Membership, type PeerSend } from './peer-common.js';

let membership: Membership = new Map();
let byUser = new Map<string, string[]>();
/** group_id -> sockets of its online members */
const rooms = new Map<string, Set<WebSocket>>();
const seqs = new Map<string, number>();

const control = controlHandler((m) => {
  membership = m;
  byUser = groupsByUser(m);
});
const server = http.createServer((req, res) => {
  if (!control(req, res)) res.writeHead(404).end();
});
const wss = new WebSocketServer({ server, perMessageDeflate: false });

interface SendFrame extends PeerSend {
  type: string;
}

wss.on('connection', (ws, req) => {
  const m = /^\/ws\/([^/?]+)/.exec(req.url ?? '');
  if (!m) return ws.close(4404);
  const user = decodeURIComponent(m[1]!);
  const groups = byUser.get(user) ?? [];
  for (const g of groups) {
    let r = rooms.get(g);
    if (!r) rooms.set(g, (r = new Set()));
    r.add(ws);
  }
  ws.on('close', () => {
    for (const g of groups) rooms.get(g)?.delete(ws);
  });
  ws.on('message', (data: Buffer) => {
    let f: SendFrame;
    try {
      f = JSON.parse(data.toString()) as SendFrame;
    } catch {
      ws.send('{"type":"error","code":"INVALID_JSON","message":"bad frame"}');
      return;
    }
    if (f.type === 'ping') return ws.send('{"type":"pong"}');
    if (f.type !== 'send' || !f.group_id || !membership.get(f.group_id)?.includes(user)) {
      ws.send('{"type":"error","code":"FORBIDDEN","message":"not a member"}');
      return;
    }
    const message = peerMessage(f.group_id, f, user, seqs);
    const payload = JSON.stringify(message);
    ws.send(`{"type":"ack","client_msg_id":${JSON.stringify(f.client_msg_id ?? null)},"data":${payload}}`);
    const frame = Buffer.from(`{"type":"message","data":${payload}}`);
    for (const peer of rooms.get(f.group_id) ?? []) peer.send(frame, { binary: false });
  });
});

server.listen(portArg(), '127.0.0.1', () => {
  const a = server.address();
  announce(typeof a === 'object' && a ? a.port : 0);
});
onSignals(() => {
  for (const c of wss.clients) c.terminate();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
