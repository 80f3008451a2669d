/**
 * Every Redis key an acpd cluster uses, in one place. A session's keys share
 * the hash tag `{<sessionId>}`, so a Lua script may touch several of them at
 * once even on a Redis Cluster (they land in one slot).
 *
 *   node:<id>            STRING  JSON {instance, url, startedAt}; expires with the lease TTL unless the node renews it
 *   nodes                ZSET    node id → last heartbeat (ms): the cluster view for metrics
 *   s:{sid}:lease        HASH    {holder, node, url, token}: who owns the live session; expires with the lease TTL
 *   s:{sid}:fence        STRING  counter: each new lease takes the next token (the fencing token)
 *   s:{sid}:events       STREAM  the event log; entry id `0-<event id>`, field `j` = the envelope's JSON
 *   s:{sid}:log          HASH    {epoch, next}: the log's epoch, and the id its next event takes (kept as long as the stream)
 *   s:{sid}:restore      STRING  JSON {action, instance, failed?}: a load/resume in flight somewhere in the
 *                                cluster (or, for a moment, how it failed, for the requests that waited on it)
 *   s:{sid}:meta         HASH    the session catalog's entry (SessionMeta's fields)
 *   catalog:<workspace>  ZSET    session id → -updatedAt: the catalog's order (ties by id, ascending)
 *   live                 ZSET    session id → lease expiry (ms): the cluster-wide session cap counts these
 *   default:<workspace>  STRING  the single-scope default session's id
 *   receipt:{<key>}      STRING  JSON receipt of an Idempotency-Key answer; expires with the TTL
 *   claim:{<key>}        STRING  JSON {node, fingerprint, deadline}: a request with that key running on a
 *                                node until `deadline` (ms) unless renewed; kept for the receipt TTL so
 *                                that a claim whose node died stays visible as interrupted
 *   permission:<id>      STRING  the session a pending permission request belongs to (votes go to its owner)
 *   secret               STRING  the cluster's shared secret, made by the first node: proves a request was forwarded by a node
 *
 * A receipt and its claim share the hash tag `{<key>}`: one script reads the
 * receipt and sets the claim atomically.
 */
export class ClusterKeys {
  constructor(readonly prefix: string) {}

  node(nodeId: string): string {
    return `${this.prefix}node:${nodeId}`;
  }

  get nodes(): string {
    return `${this.prefix}nodes`;
  }

  lease(sessionId: string): string {
    return this.session(sessionId, 'lease');
  }

  fence(sessionId: string): string {
    return this.session(sessionId, 'fence');
  }

  events(sessionId: string): string {
    return this.session(sessionId, 'events');
  }

  log(sessionId: string): string {
    return this.session(sessionId, 'log');
  }

  restore(sessionId: string): string {
    return this.session(sessionId, 'restore');
  }

  meta(sessionId: string): string {
    return this.session(sessionId, 'meta');
  }

  catalog(workspaceCwd: string): string {
    return `${this.prefix}catalog:${workspaceCwd}`;
  }

  get live(): string {
    return `${this.prefix}live`;
  }

  defaultSession(workspaceCwd: string): string {
    return `${this.prefix}default:${workspaceCwd}`;
  }

  receipt(key: string): string {
    return `${this.prefix}receipt:{${key}}`;
  }

  claim(key: string): string {
    return `${this.prefix}claim:{${key}}`;
  }

  permission(requestId: string): string {
    return `${this.prefix}permission:${requestId}`;
  }

  get secret(): string {
    return `${this.prefix}secret`;
  }

  private session(sessionId: string, part: string): string {
    return `${this.prefix}s:{${sessionId}}:${part}`;
  }
}
