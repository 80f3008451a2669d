/** GET /health and GET /capabilities. */
import type { InitializeResponse } from '@agentclientprotocol/sdk';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { policies } from '../plugins/route-policy.js';
import { capabilities, health } from '../schemas/meta.js';
import { VERSION } from '../version.js';

/** Advertised features, in the contract's order; only what this build serves. */
const FEATURES = [
  'health',
  'capabilities',
  'session_create',
  'session_scope_override',
  'session_load',
  'unstable_session_resume',
  'session_list',
  'session_prompt',
  'session_cancel',
  'session_events',
  'session_set_model',
  'permission_vote',
  'session_close',
  'session_status',
  'non_blocking_prompt',
  'session_turn_status',
  'workspace_file_read',
  'workspace_file_bytes',
  'workspace_file_read_cursor',
  // acpd's own: what the qwen daemon lacks.
  'idempotency_keys',
] as const;

/** Served only with --allow-file-writes. */
const FILE_WRITES = ['workspace_file_write', 'workspace_file_upload'] as const;

/** Served only with the durable event log: a session's epoch and ids survive a daemon restart. */
const DURABLE_REPLAY = 'durable_replay';

const PROTOCOL_VERSIONS = { current: 'v1', supported: ['v1'] };

/**
 * REST, and ACP itself at `/acp` over Streamable HTTP. The qwen daemon's
 * client picks the first of `acp-ws`, `acp-http`, `rest` listed. `/acp` takes
 * WebSockets too, but `acp-ws` is not listed: that client's WebSocket
 * transport cannot resume a stream from an event id, so listing it would move
 * the client onto a transport that loses events across a reconnect.
 */
const TRANSPORTS = ['rest', 'acp-http'] as const;

function isDeep(query: Record<string, unknown>): boolean {
  if (!('deep' in query)) return false;
  const v = query.deep;
  return v === '' || v === '1' || v === 'true';
}

const metaRoutes: FastifyPluginAsyncTypebox<{ allowFileWrites: boolean }> = async (app, { allowFileWrites }) => {
  app.get('/health', { schema: health, config: { policy: policies.probe } }, async (req, reply) => {
    if (!isDeep(req.query)) return { status: 'ok' };
    try {
      return {
        status: 'ok',
        sessions: app.sessions.sessionCount,
        pendingPermissions: app.sessions.pendingPermissionCount,
        version: VERSION,
      };
    } catch (err) {
      req.log.error({ err }, 'deep health probe failed');
      return reply.code(503).send({ status: 'degraded' });
    }
  });

  app.get('/capabilities', { schema: capabilities, config: { policy: policies.read } }, async () => ({
    v: 1 as const,
    protocolVersions: { current: PROTOCOL_VERSIONS.current, supported: [...PROTOCOL_VERSIONS.supported] },
    mode: 'http-bridge' as const,
    features: [
      ...FEATURES,
      ...(allowFileWrites ? FILE_WRITES : []),
      ...(app.dataStore || app.cluster ? [DURABLE_REPLAY] : []),
    ],
    modelServices: [],
    workspaceCwd: app.sessions.workspace,
    limits: app.sessions.limits,
    transports: [...TRANSPORTS],
    policy: app.channels.router.permissions.policyInfo,
    version: VERSION,
    agent: describeAgent(app.channels.argv, app.channels.lastInitialize),
  }));
};

/** The agent's argv (never its environment) and, once a handshake has run, who it said it is. */
function describeAgent(argv: readonly string[], handshake: InitializeResponse | undefined) {
  return {
    command: [...argv],
    ...(handshake === undefined
      ? {}
      : {
          protocolVersion: handshake.protocolVersion,
          ...(handshake.agentInfo ? { agentInfo: handshake.agentInfo } : {}),
          ...(handshake.agentCapabilities ? { agentCapabilities: handshake.agentCapabilities } : {}),
        }),
  };
}

export default metaRoutes;
