/**
 * What the daemon needs of the ACP SDK before any agent runs. The SDK itself
 * (its zod schemas of every ACP message, ~120 ms of start-up and ~7 MB of
 * heap) is only loaded with services/agent-channel.ts, which the channel
 * supervisor imports when it spawns the first agent: a daemon that has not
 * started one yet does not pay for it.
 */
import type { RequestError } from '@agentclientprotocol/sdk';

/** The ACP version acpd speaks: the SDK's PROTOCOL_VERSION (test/acp-sdk.test.ts keeps them equal). */
export const ACP_PROTOCOL_VERSION = 1;

let requestErrorClass: typeof RequestError | undefined;

/** Called by agent-channel.ts as it loads, with the SDK's error class. */
export function knowRequestError(cls: typeof RequestError): void {
  requestErrorClass = cls;
}

/**
 * Whether `err` is the SDK's JSON-RPC error. Only an agent connection makes
 * one, so before the SDK is loaded nothing can be.
 */
export function isRequestError(err: unknown): err is RequestError {
  return requestErrorClass !== undefined && err instanceof requestErrorClass;
}
