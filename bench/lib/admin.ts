import { SignJWT } from 'jose';

export async function signToken(secret: string, sub: string, admin = false): Promise<string> {
  return new SignJWT(admin ? { scope: 'admin' } : {})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime('4h')
    .sign(new TextEncoder().encode(secret));
}

/** Run `fn` over `items` with at most `concurrency` in flight. */
export async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

/** Sets up users and groups through the service's HTTP API with an admin token (409 = already there). */
export class AdminApi {
  private constructor(
    private readonly baseUrl: string,
    private readonly auth: string,
  ) {}

  static async create(baseUrl: string, secret: string): Promise<AdminApi> {
    return new AdminApi(baseUrl, `Bearer ${await signToken(secret, 'bench-admin', true)}`);
  }

  async request(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(this.baseUrl + path, {
          method,
          headers: { authorization: this.auth, ...(body ? { 'content-type': 'application/json' } : {}) },
          body: body ? JSON.stringify(body) : undefined,
          signal: AbortSignal.timeout(30_000),
        });
        const text = await r.text();
        let parsed: unknown = text;
        try {
          parsed = text ? JSON.parse(text) : null;
        } catch {
          /* keep text */
        }
        if (r.status === 429 || r.status === 503) throw new Error(`HTTP ${r.status}`);
        return { status: r.status, body: parsed };
      } catch (err) {
        if (attempt >= 4) throw err;
        await new Promise((res) => setTimeout(res, 200 * (attempt + 1)));
      }
    }
  }

  private async expect(method: string, path: string, body: unknown, ok: number[]): Promise<void> {
    const r = await this.request(method, path, body);
    if (!ok.includes(r.status)) throw new Error(`${method} ${path} -> ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
  }

  async createUsers(users: readonly { user_id: string; user_role?: string }[], concurrency = 32): Promise<void> {
    await pool(users, concurrency, (u) =>
      this.expect('POST', '/api/user', { user_id: u.user_id, username: u.user_id, user_role: u.user_role ?? 'PATIENT' }, [201, 409]),
    );
  }

  async createGroups(groups: Record<string, string[]>, concurrency = 16): Promise<void> {
    await pool(Object.entries(groups), concurrency, ([group_id, members]) =>
      this.expect('POST', '/api/group/create', { group_id, group_name: group_id, members }, [201, 409]),
    );
  }

  async addMembers(pairs: readonly { group_id: string; user_id: string; user_role?: string }[], concurrency = 16): Promise<void> {
    await pool(pairs, concurrency, (p) =>
      this.expect(
        'POST',
        `/api/group/${encodeURIComponent(p.group_id)}/members`,
        p.user_role ? { user_id: p.user_id, user_role: p.user_role } : { user_id: p.user_id },
        [201, 409],
      ),
    );
  }
}
