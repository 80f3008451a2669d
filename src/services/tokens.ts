/**
 * Named tokens: who a bearer token belongs to and what it may do.
 *
 * The tokens file (--tokens-file) lists users, each with the hashes of its
 * tokens, its scopes, an optional expiry and an optional prompt budget. Only
 * hashes are kept on disk and in memory: `sha256:<hex>` of the token. A plain
 * hash (no salt, no stretching) is enough because tokens are meant to be
 * random and long (`acpd hash-token` makes one with 256 bits): a password
 * hash's slowness protects guessable secrets, which these are not, and a
 * fast hash lets every request be checked against every entry.
 *
 * A lookup hashes the presented token once and compares it with every
 * stored hash through `timingSafeEqual`, without stopping at a match, so the
 * time it takes says nothing about which entry (if any) matched.
 *
 * `ClientIdBindings` ties an `X-Qwen-Client-Id` to the first user that used
 * it, so no other user can act under that id.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';

export const SCOPES = ['read', 'prompt', 'approve', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** The user the `--token` belongs to: every scope. */
export const DEFAULT_USER = 'default';

const HASH_PREFIX = 'sha256:';
const HASH_PATTERN = /^sha256:[0-9a-f]{64}$/;
const USER_NAME = /^[A-Za-z0-9._@-]{1,64}$/;

export interface TokenUser {
  readonly name: string;
  readonly scopes: ReadonlySet<Scope>;
  /** Milliseconds since the epoch after which its tokens answer 401 `token_expired`. */
  readonly expiresAt?: number;
  /** Prompts per minute this user may send, whatever client it uses. */
  readonly promptRate?: number;
}

/** Who made a request: the token's user and its scopes. */
export interface Identity {
  readonly user: string;
  readonly scopes: ReadonlySet<Scope>;
  readonly promptRate?: number;
}

export type TokenMatch = { identity: Identity; expired: false } | { expired: true; user: string };

/** `sha256:<hex>` of a token, as the tokens file stores it. */
export function hashToken(token: string): string {
  return HASH_PREFIX + createHash('sha256').update(token, 'utf8').digest('hex');
}

/** A fresh random token (256 bits, base64url). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Whether a user with these scopes may do what needs `scope` (`admin` may do everything). */
export function allows(scopes: ReadonlySet<Scope>, scope: Scope): boolean {
  return scopes.has(scope) || scopes.has('admin');
}

interface Entry {
  readonly digest: Buffer;
  readonly user: TokenUser;
}

/** The users and their token hashes, as one file (and the --token) define them. */
export class TokenTable {
  private readonly entries: Entry[];
  readonly users: ReadonlyMap<string, TokenUser>;

  constructor(users: readonly { user: TokenUser; hashes: readonly string[] }[]) {
    const byName = new Map<string, TokenUser>();
    this.entries = [];
    for (const { user, hashes } of users) {
      byName.set(user.name, user);
      for (const hash of hashes)
        this.entries.push({ digest: Buffer.from(hash.slice(HASH_PREFIX.length), 'hex'), user });
    }
    this.users = byName;
  }

  get size(): number {
    return this.entries.length;
  }

  /** The user of a token (or that it has expired), or undefined when no entry matches. */
  lookup(token: string, now = Date.now()): TokenMatch | undefined {
    const digest = createHash('sha256').update(token, 'utf8').digest();
    let found: TokenUser | undefined;
    // Every entry is compared, a match or not: the loop's length does not depend on where the match is.
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.digest, digest) && found === undefined) found = entry.user;
    }
    if (found === undefined) return undefined;
    if (found.expiresAt !== undefined && now >= found.expiresAt) return { expired: true, user: found.name };
    return {
      expired: false,
      identity: {
        user: found.name,
        scopes: found.scopes,
        ...(found.promptRate !== undefined ? { promptRate: found.promptRate } : {}),
      },
    };
  }
}

/** Why a tokens file was refused; the message names the file and the fault. */
export class TokensFileError extends Error {}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The users of a tokens file's text: `{users: [...]}` or a bare list, in
 * YAML (JSON is YAML too). Throws TokensFileError naming the first fault.
 */
export function parseTokensFile(text: string): { user: TokenUser; hashes: string[] }[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new TokensFileError(`not YAML or JSON (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`);
  }
  const list = Array.isArray(doc) ? doc : isRecord(doc) ? doc.users : undefined;
  if (!Array.isArray(list)) throw new TokensFileError('expected `users:` with a list of users');
  const names = new Set<string>();
  const seen = new Set<string>();
  return list.map((item: unknown, i) => {
    const at = `users[${i}]`;
    if (!isRecord(item)) throw new TokensFileError(`${at}: expected an object`);
    const { name, tokens, scopes, expires, promptRate } = item;
    if (typeof name !== 'string' || !USER_NAME.test(name)) {
      throw new TokensFileError(`${at}: \`name\` must be 1-64 letters, digits or . _ @ -`);
    }
    if (names.has(name)) throw new TokensFileError(`${at}: user "${name}" is listed twice`);
    names.add(name);
    const hashes = typeof tokens === 'string' ? [tokens] : tokens;
    if (!Array.isArray(hashes) || hashes.length === 0) {
      throw new TokensFileError(`${at} (${name}): \`tokens\` must list at least one token hash`);
    }
    for (const hash of hashes) {
      if (typeof hash !== 'string' || !HASH_PATTERN.test(hash)) {
        throw new TokensFileError(
          `${at} (${name}): a token must be stored as its hash, "sha256:" and 64 lower-case hex digits (acpd hash-token)`,
        );
      }
      if (seen.has(hash)) throw new TokensFileError(`${at} (${name}): a token hash is listed twice`);
      seen.add(hash);
    }
    if (!Array.isArray(scopes) || scopes.length === 0) {
      throw new TokensFileError(`${at} (${name}): \`scopes\` must list one or more of ${SCOPES.join(', ')}`);
    }
    for (const scope of scopes) {
      if (!SCOPES.includes(scope as Scope)) {
        throw new TokensFileError(`${at} (${name}): unknown scope ${JSON.stringify(scope)} (${SCOPES.join(', ')})`);
      }
    }
    let expiresAt: number | undefined;
    if (expires !== undefined && expires !== null) {
      // YAML reads an unquoted date as a Date; a string is parsed as ISO 8601.
      expiresAt = expires instanceof Date ? expires.getTime() : typeof expires === 'string' ? Date.parse(expires) : NaN;
      if (Number.isNaN(expiresAt)) throw new TokensFileError(`${at} (${name}): \`expires\` must be an ISO date`);
    }
    if (
      promptRate !== undefined &&
      (typeof promptRate !== 'number' || !Number.isInteger(promptRate) || promptRate < 1)
    ) {
      throw new TokensFileError(
        `${at} (${name}): \`promptRate\` must be a whole number of prompts per minute, 1 or more`,
      );
    }
    const user: TokenUser = {
      name,
      scopes: new Set(scopes as Scope[]),
      ...(expiresAt !== undefined ? { expiresAt } : {}),
      ...(promptRate !== undefined ? { promptRate } : {}),
    };
    return { user, hashes: hashes as string[] };
  });
}

/**
 * The table for a daemon: the tokens file's users, and the --token as user
 * `default` with every scope. A file user named `default` beside a --token
 * is refused: two meanings for one name.
 */
export function loadTokenTable(opts: { token?: string; tokensFile?: string }): TokenTable {
  const users: { user: TokenUser; hashes: string[] }[] = [];
  if (opts.tokensFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(opts.tokensFile, 'utf8');
    } catch (err) {
      throw new TokensFileError(`cannot be read (${err instanceof Error ? err.message : String(err)})`);
    }
    users.push(...parseTokensFile(text));
  }
  if (opts.token !== undefined) {
    if (users.some((u) => u.user.name === DEFAULT_USER)) {
      throw new TokensFileError(`user "${DEFAULT_USER}" is the --token's; name the file's user otherwise`);
    }
    const hash = hashToken(opts.token);
    if (users.some((u) => u.hashes.includes(hash))) {
      throw new TokensFileError('the --token is also listed in the file; give it one owner');
    }
    users.push({ user: { name: DEFAULT_USER, scopes: new Set(SCOPES) }, hashes: [hash] });
  }
  return new TokenTable(users);
}

/** How many client ids are remembered, and for how long after their last use. */
const MAX_BINDINGS = 10_000;
const BINDING_TTL_MS = 24 * 60 * 60 * 1000;

/**
 * Which user each client id belongs to: the first user that presented it.
 * Bounded in size and in time (least recently used first), so a flood of
 * fresh ids cannot grow it without end; an id forgotten can be claimed again,
 * which is acceptable for a label that was never a credential.
 */
export class ClientIdBindings {
  private readonly owners = new Map<string, { user: string; seenAt: number }>();

  constructor(
    private readonly max = MAX_BINDINGS,
    private readonly ttlMs = BINDING_TTL_MS,
  ) {}

  /** Binds the id to the user if it is free; false when another user holds it. */
  claim(clientId: string, user: string, now = Date.now()): boolean {
    const held = this.owners.get(clientId);
    if (held !== undefined && now - held.seenAt < this.ttlMs && held.user !== user) return false;
    // Delete then set: the Map's order is the order of last use.
    this.owners.delete(clientId);
    this.owners.set(clientId, { user, seenAt: now });
    while (this.owners.size > this.max) {
      const oldest = this.owners.keys().next().value;
      if (oldest === undefined) break;
      this.owners.delete(oldest);
    }
    return true;
  }

  get size(): number {
    return this.owners.size;
  }
}
