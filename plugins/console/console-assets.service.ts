import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { extname, join, relative, sep } from 'node:path';
import type { HttpResponse } from '../http/http.public.js';

/** Served extensions and their content types; files with any other extension are never served. */
const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * The page may load only its own scripts and styles and talk only to its own
 * origin (HTTP API and WebSocket); nothing inline, no framing.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

/**
 * The console's static files, read once into memory. Lookup is by exact
 * relative name among the files found under public/, so no request path can
 * reach anything outside that folder (no traversal, no dotfiles, no symlinks).
 */
export class ConsoleAssets {
  private readonly files = new Map<string, Asset>();

  private constructor(readonly root: string) {}

  static async load(root: string): Promise<ConsoleAssets> {
    const assets = new ConsoleAssets(root);
    await assets.walk(root);
    if (!assets.files.has('index.html')) throw new Error(`console: ${join(root, 'index.html')} is missing`);
    return assets;
  }

  private async walk(dir: string): Promise<void> {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (entry.name.startsWith('.')) continue;
      const full = join(dir, entry.name);
      if (entry.isDirectory()) {
        await this.walk(full);
        continue;
      }
      if (!entry.isFile()) continue;
      const type = CONTENT_TYPES[extname(entry.name).toLowerCase()];
      if (!type) continue;
      const body = await readFile(full);
      const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
      this.files.set(relative(this.root, full).split(sep).join('/'), { body, type, etag });
    }
  }

  /** Names of the served files (relative, '/'-separated). */
  names(): string[] {
    return [...this.files.keys()].sort();
  }

  /**
   * The response for a relative path ('' = the page). Null when no such file.
   * Assets are not fingerprinted, so every response must be revalidated
   * (`no-cache` + ETag; a matching If-None-Match gets 304 without a body).
   */
  respond(path: string, ifNoneMatch: string | undefined): HttpResponse | null {
    const name = path === '' ? 'index.html' : path;
    const asset = this.files.get(name);
    if (!asset) return null;
    const headers: Record<string, string> = {
      'content-type': asset.type,
      'cache-control': 'no-cache',
      etag: asset.etag,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
    };
    if (asset.type.startsWith('text/html')) {
      headers['content-security-policy'] = CONSOLE_CSP;
      headers['x-frame-options'] = 'DENY';
    }
    if (ifNoneMatch && ifNoneMatch.split(',').some((t) => t.trim() === asset.etag || t.trim() === '*')) {
      return { status: 304, body: '', headers };
    }
    return { status: 200, body: asset.body, headers };
  }
}
