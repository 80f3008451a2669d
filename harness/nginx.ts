// What every test that runs nginx shares: the main context around a site taken from deploy/, and the
// directives that make a proxy pass Server-Sent Events through as they come.
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** The directives deploy/nginx.conf and deploy/nginx-cluster.conf both need for SSE and for acpd's view of clients. */
export const STREAMING_DIRECTIVES = [
  'proxy_http_version 1.1;',
  'proxy_set_header Connection "";',
  'proxy_buffering off;',
  'proxy_cache off;',
  'gzip off;',
  'proxy_set_header Last-Event-ID $http_last_event_id;',
  'proxy_set_header X-Forwarded-For $remote_addr;',
  'proxy_set_header X-Forwarded-Proto $scheme;',
  'proxy_set_header X-Forwarded-Host $host;',
] as const;

export interface MainConfigOptions {
  /** Lines of the `http` block before the site (an access log, say); `access_log off;` when absent. */
  httpLines?: string[];
  /** `worker_connections` (128). */
  workerConnections?: number;
}

/** The whole nginx.conf: a minimal main context around `site` (a server block and its upstreams), every path in `dir`. */
export function nginxMainConfig(dir: string, site: string, opts: MainConfigOptions = {}): string {
  const temp = (name: string): string => {
    const p = path.join(dir, name);
    mkdirSync(p, { recursive: true });
    return p;
  };
  // As root, workers would otherwise switch to "nobody", who cannot enter our 0700 temp dir.
  const user = process.getuid?.() === 0 ? `user ${os.userInfo().username};\n` : '';
  return [
    `${user}worker_processes 1;`,
    `pid ${path.join(dir, 'nginx.pid')};`,
    'error_log stderr notice;',
    `events { worker_connections ${opts.workerConnections ?? 128}; }`,
    'http {',
    ...(opts.httpLines ?? ['  access_log off;']),
    `  client_body_temp_path ${temp('client_body')};`,
    `  proxy_temp_path ${temp('proxy')};`,
    `  fastcgi_temp_path ${temp('fastcgi')};`,
    `  uwsgi_temp_path ${temp('uwsgi')};`,
    `  scgi_temp_path ${temp('scgi')};`,
    site,
    '}',
    '',
  ].join('\n');
}
