/**
 * Who may settle a permission request (`--permission-policy`), with the qwen
 * daemon's four names. Unlike qwen, a voter is the user of the bearer token
 * that cast the vote (see tokens.ts), never a self-declared client id, so
 * `designated` and `consensus` cannot be spoofed by sending someone else's
 * `X-Qwen-Client-Id`.
 */
import { isIP } from 'node:net';

export const PERMISSION_POLICIES = ['first-responder', 'designated', 'consensus', 'local-only'] as const;

export type PermissionPolicyName = (typeof PERMISSION_POLICIES)[number];

/** The daemon's policy, as `/capabilities.policy` advertises it. */
export interface PermissionPolicy {
  name: PermissionPolicyName;
  /** Under `consensus`: distinct users needed; 0 = a majority of the users attached when the agent asks. */
  consensusQuorum: number;
}

/** Whoever cast a vote. */
export interface Voter {
  /** The token's user; undefined when the daemon knows no tokens (everyone is the same nobody). */
  readonly user: string | undefined;
  readonly clientId?: string;
  /** The client's address (req.ip, so after --trust-proxy) is a loopback one. */
  readonly loopback: boolean;
}

/** A vote as `permission_resolved` (and `permission_vote`) lists it. */
export interface CastVote {
  user: string;
  outcome: 'selected' | 'cancelled';
  optionId?: string;
}

/** The user frames name when no token says who voted. */
export const ANONYMOUS_USER = 'default';

/**
 * 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6. All of 127/8 counts, as
 * the operating system routes it: a client on 127.0.0.2 is on this machine.
 */
export function isLoopbackAddress(ip: string): boolean {
  const addr = ip.toLowerCase().startsWith('::ffff:') ? ip.slice(7) : ip;
  if (isIP(addr) === 4) return addr.startsWith('127.');
  return addr === '::1' || addr === '0:0:0:0:0:0:0:1';
}

/** Consensus's quorum for a request: the configured one, else a majority of the users attached (at least 1). */
export function quorumFor(policy: PermissionPolicy, attachedUsers: number): number {
  if (policy.consensusQuorum > 0) return policy.consensusQuorum;
  return Math.floor(Math.max(attachedUsers, 1) / 2) + 1;
}
