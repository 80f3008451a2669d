/**
 * The session routes: create/attach, restore, list, prompt, cancel, model,
 * close and status (the prompt queue's own routes are in prompts.ts).
 * Handlers stay thin: validated input in, one service call, result out.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { PromptAbortedError, WorkspaceMismatchError, type RestoreAction } from '../errors.js';
import { policies } from '../plugins/route-policy.js';
import { actorOf } from '../plugins/security.js';
import {
  DEFAULT_CATALOG_PAGE,
  cancelSession,
  closeSession,
  createSession,
  listSessions,
  promptSession,
  restoreSchemas,
  sessionStatus,
  setModel,
} from '../schemas/sessions.js';
import { canonicalizeWorkspace } from '../services/workspace.js';
import { clientGone } from './client-gone.js';
import { prefersRespondAsync } from './prefer.js';

/** The client's own id (`X-Qwen-Client-Id`, as the qwen daemon reads it), else a fresh one. */
function clientIdOf(req: FastifyRequest): string {
  const given = req.headers['x-qwen-client-id'];
  return typeof given === 'string' && given !== '' && given.length <= 256 ? given : randomUUID();
}

const sessionRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const sessions = app.sessions;

  /**
   * When the client left before its create/restore answer could be written:
   * the session's creator kills it unless someone else attached meanwhile;
   * an attacher just lets go.
   */
  async function reapIfGone(
    req: FastifyRequest,
    reply: FastifyReply,
    sessionId: string,
    attached: boolean,
  ): Promise<boolean> {
    if (!clientGone(req, reply)) return false;
    req.log.info({ sessionId, attached }, 'client left before the session answer; releasing it');
    if (attached) await sessions.detachClient(sessionId).catch(() => {});
    else await sessions.killSession(sessionId, { requireZeroAttaches: true }).catch(() => {});
    reply.hijack();
    return true;
  }

  /** The request's user holds the session from now on: its status lists them. */
  function joined(req: FastifyRequest, sessionId: string): void {
    const user = req.identity?.user;
    if (user !== undefined) sessions.get(sessionId)?.join(user);
  }

  app.post(
    '/session',
    { schema: createSession, config: { policy: policies.mutation, cluster: 'create' } },
    async (req, reply) => {
      const body = req.body;
      const handle = await sessions.spawnOrAttach({
        workspaceCwd: body.cwd,
        modelServiceId: typeof body.modelServiceId === 'string' ? body.modelServiceId : undefined,
        sessionScope: body.sessionScope,
      });
      if (await reapIfGone(req, reply, handle.sessionId, handle.attached)) return reply;
      joined(req, handle.sessionId);
      return handle;
    },
  );

  for (const action of ['load', 'resume'] as const satisfies readonly RestoreAction[]) {
    app.post(
      `/session/:id/${action}`,
      { schema: restoreSchemas[action], config: { policy: policies.mutation, cluster: 'restore' } },
      async (req, reply) => {
        const result = await app.restores.restore(action, req.params.id, req.body.cwd);
        if (await reapIfGone(req, reply, result.sessionId, result.attached)) return reply;
        joined(req, result.sessionId);
        return { ...result, clientId: clientIdOf(req) };
      },
    );
  }

  app.get('/workspace/:id/sessions', { schema: listSessions, config: { policy: policies.read } }, async (req) => {
    const requested = req.params.id;
    const key = requested === sessions.workspace ? requested : canonicalizeWorkspace(path.resolve(requested));
    if (key !== sessions.workspace) {
      throw new WorkspaceMismatchError(
        sessions.workspace,
        key,
        `Workspace mismatch: daemon is bound to ${JSON.stringify(sessions.workspace)}`,
      );
    }
    const { size, cursor, archiveState } = req.query;
    return await sessions.catalog.page({
      workspaceCwd: sessions.workspace,
      // acpd archives nothing: the archived list is empty (a bad cursor is still a 400 there).
      size: archiveState === 'archived' ? 0 : size === undefined ? DEFAULT_CATALOG_PAGE : Number(size),
      ...(cursor !== undefined ? { cursor } : {}),
    });
  });

  app.post(
    '/session/:id/prompt',
    { schema: promptSession, config: { policy: policies.prompt, cluster: 'session' } },
    async (req, reply) => {
      if (prefersRespondAsync(req.headers.prefer)) {
        // Admitted or refused here; the turn then runs on whatever this client does.
        const { promptId, lastEventId, eventEpoch } = sessions.sendPrompt(
          req.params.id,
          req.body,
          undefined,
          actorOf(req),
        );
        reply.header('Preference-Applied', 'respond-async').code(202);
        return { promptId, lastEventId, eventEpoch };
      }
      const ac = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableEnded) ac.abort();
      };
      reply.raw.once('close', onClose);
      try {
        return await sessions.sendPrompt(req.params.id, req.body, ac.signal, actorOf(req)).done;
      } catch (err) {
        if (err instanceof PromptAbortedError && ac.signal.aborted) {
          reply.hijack();
          return reply;
        }
        throw err;
      } finally {
        reply.raw.off('close', onClose);
      }
    },
  );

  app.post(
    '/session/:id/cancel',
    { schema: cancelSession, config: { policy: policies.mutation, cluster: 'session' } },
    async (req, reply) => {
      await sessions.cancel(req.params.id, req.body, actorOf(req));
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/session/:id/model',
    { schema: setModel, config: { policy: policies.mutation, cluster: 'session' } },
    async (req) => {
      return sessions.setSessionModel(req.params.id, req.body, actorOf(req));
    },
  );

  app.delete(
    '/session/:id',
    { schema: closeSession, config: { policy: policies.mutation, cluster: 'session' } },
    async (req, reply) => {
      await sessions.closeSession(req.params.id, actorOf(req));
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/session/:id/status',
    { schema: sessionStatus, config: { policy: policies.read, cluster: 'session' } },
    async (req) => {
      return sessions.status(req.params.id);
    },
  );
};

export default sessionRoutes;
