import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** group_id -> member user_ids, set by the harness through PUT /bench/groups before a scenario. */
export type Membership = Map<string, string[]>;

/** user_id -> group_ids, derived from the membership. */
export function groupsByUser(m: Membership): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [g, users] of m) {
    for (const u of users) {
      let l = out.get(u);
      if (!l) out.set(u, (l = []));
      l.push(g);
    }
  }
  return out;
}

/** The peers' control endpoint: PUT /bench/groups {"groups": {"g1": ["u1", ...]}} replaces the membership. */
export function controlHandler(
  onGroups: (m: Membership) => void,
): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    if (req.method === 'PUT' && req.url === '/bench/groups') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString()) as { groups: Record<string, string[]> };
          onGroups(new Map(Object.entries(body.groups)));
          res.writeHead(204).end();
        } catch {
          res.writeHead(400).end();
        }
      });
      return true;
    }
    if (req.method === 'GET' && req.url === '/readyz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      return true;
    }
    return false;
  };
}

/** Port from argv[2] (0 = any); the peer prints `LISTENING <port>` once bound (127.0.0.1 only). */
export function portArg(): number {
  return Number(process.argv[2] ?? 0);
}

export function announce(port: number): void {
  process.stdout.write(`LISTENING ${port}\n`);
}

export function onSignals(close: () => void): void {
  process.on('SIGTERM', close);
  process.on('SIGINT', close);
  process.on('disconnect', close);
}

/** What a peer's client sends (the service's send frame, without the type). */
export interface PeerSend {
  group_id?: string;
  msg_type?: string;
  msg_content?: string;
  client_msg_id?: string;
}

/** The message a peer "stores": the service's message shape, seq counted per group in memory. */
export function peerMessage(groupId: string, f: PeerSend, user: string, seqs: Map<string, number>): Record<string, unknown> {
  const seq = (seqs.get(groupId) ?? 0) + 1;
  seqs.set(groupId, seq);
  return {
    message_id: randomUUID(),
    group_id: groupId,
    seq,
    from_user_id: user,
    msg_type: f.msg_type ?? 'TEXT',
    msg_content: f.msg_content ?? '',
    client_msg_id: f.client_msg_id ?? null,
    created_at: new Date().toISOString(),
  };
}
