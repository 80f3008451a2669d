/**
 * The one place where the agent's calls to acpd land, and the one table that
 * says which bus a session id's events go to.
 *
 * A session is routed from the moment the agent may speak about it: a warm
 * session as soon as the agent created it, a restore before `session/load`
 * is sent (its history replay arrives before the answer), a live session for
 * its whole life. Only live sessions may ask for permission; for the others
 * nobody could answer, so the request is answered `cancelled` at once.
 */
import type {
  ReadTextFileRequest,
  ReadTextFileResponse,
  RequestPermissionRequest,
  RequestPermissionResponse,
  SessionNotification,
  WriteTextFileRequest,
  WriteTextFileResponse,
} from '@agentclientprotocol/sdk';
import type { AgentChannel, ClientHandlers } from './agent-channel.js';
import type { EventBus } from './event-bus.js';
import type { FsProxy } from './fs-proxy.js';
import type { PermissionBroker } from './permissions.js';

const CANCELLED: RequestPermissionResponse = { outcome: { outcome: 'cancelled' } };

/**
 * Where a restore's history replay goes besides (or instead of) the bus:
 * `collect` sees every `session/update` of the session while the route is
 * bound with it; `publish: false` keeps them off the bus (its log already
 * holds that history).
 */
export interface ReplaySink {
  collect(update: SessionNotification): void;
  publish: boolean;
}

interface Route {
  channel: AgentChannel;
  events: EventBus;
  /** A registered session that clients can see and answer for. */
  live: boolean;
  replay?: ReplaySink;
}

export class AgentRouter implements ClientHandlers {
  private readonly routes = new Map<string, Route>();

  constructor(
    readonly permissions: PermissionBroker,
    private readonly fs: FsProxy,
  ) {}

  /**
   * Sends what the agent says about `sessionId` on `channel` to `events` (replacing any earlier route),
   * and to `replay` as well when given (a restore collecting the history the agent replays).
   */
  bind(sessionId: string, channel: AgentChannel, events: EventBus, live: boolean, replay?: ReplaySink): void {
    this.routes.set(sessionId, replay ? { channel, events, live, replay } : { channel, events, live });
  }

  /** Drops the route of `sessionId`, if it still goes to `events`. */
  unbind(sessionId: string, events: EventBus): void {
    if (this.routes.get(sessionId)?.events === events) this.routes.delete(sessionId);
  }

  busFor(sessionId: string): EventBus | undefined {
    return this.routes.get(sessionId)?.events;
  }

  /** The live sessions routed to `channel`. */
  liveOn(channel: AgentChannel): string[] {
    const ids: string[] = [];
    for (const [id, route] of this.routes) if (route.channel === channel && route.live) ids.push(id);
    return ids;
  }

  /** Drops every route to `channel` (it is gone). */
  dropChannel(channel: AgentChannel): void {
    for (const [id, route] of this.routes) if (route.channel === channel) this.routes.delete(id);
  }

  // ---- what the agent calls ---------------------------------------------

  /** True when the update went to a bus that sends it only at its group commit (agent-lines may keep going). */
  sessionUpdate(params: SessionNotification, json?: string): boolean {
    const route = this.routes.get(params.sessionId);
    if (!route) return true;
    route.replay?.collect(params);
    if (route.replay?.publish === false) return true;
    route.events.publish('session_update', params, json);
    return route.events.sendsAtCommit;
  }

  requestPermission(params: RequestPermissionRequest): Promise<RequestPermissionResponse> {
    const route = this.routes.get(params.sessionId);
    if (!route?.live) return Promise.resolve(CANCELLED);
    return this.permissions.request(params.sessionId, route.events, params);
  }

  readTextFile(params: ReadTextFileRequest): Promise<ReadTextFileResponse> {
    return this.fs.readTextFile(params);
  }

  writeTextFile(params: WriteTextFileRequest): Promise<WriteTextFileResponse> {
    return this.fs.writeTextFile(params);
  }
}
