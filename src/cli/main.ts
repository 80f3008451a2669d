// The client subcommands of the acpd binary: `acpd chat`, `acpd attach <id>`, `acpd sessions`. They
// talk to a running daemon through acpd/client only (no HTTP of their own).
import { AcpdClient, AcpdError, UnauthorizedError } from '../client/index.js';
import { clientUsage, parseClientArgs, UsageError, type ClientArgs } from './args.js';
import { Conversation, EXIT, type Terminal } from './chat.js';
import { allSessions, sessionTable } from './sessions.js';

export { isClientCommand } from './args.js';

function explain(err: unknown, url: string): string {
  if (err instanceof UnauthorizedError)
    return `the daemon at ${url} wants a token (--token or ACPD_TOKEN): ${err.message}`;
  if (err instanceof AcpdError)
    return `${err.message} (HTTP ${err.status}${err.code === undefined ? '' : `, ${err.code}`})`;
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return err.message === 'fetch failed' ? `cannot reach the daemon at ${url}${cause}` : `${err.message}${cause}`;
  }
  return String(err);
}

async function chat(client: AcpdClient, args: ClientArgs, io: Terminal, env: NodeJS.ProcessEnv): Promise<number> {
  const cwd = args.cwd === undefined ? {} : { cwd: args.cwd };
  let sessionId: string;
  let fromStart = true;
  if (args.command === 'attach') {
    sessionId = args.sessionId ?? '';
  } else if (args.load !== undefined) {
    sessionId = (await client.load(args.load, cwd)).sessionId;
  } else if (args.resume !== undefined) {
    sessionId = (await client.resume(args.resume, cwd)).sessionId;
    // Resume restores the agent's context without showing it: no history here either.
    fromStart = false;
  } else {
    // A new session every time (`thread`), whatever the daemon's default scope: joining one is `attach`.
    sessionId = (await client.createSession({ ...cwd, sessionScope: 'thread' })).sessionId;
  }
  const conversation = new Conversation(client, io, {
    sessionId,
    fromStart,
    approve: args.approve,
    noColour: env.NO_COLOR !== undefined && env.NO_COLOR !== '',
  });
  const done = conversation.run();
  if (!(io.stdin.isTTY && io.stdout.isTTY)) void conversation.readLines();
  return done;
}

/** Runs a client subcommand (`argv` starts with its word); the process's exit code. */
export async function runClient(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  io: Terminal & { stderr: NodeJS.WritableStream },
): Promise<number> {
  let args: ClientArgs;
  try {
    args = parseClientArgs(argv, env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`acpd: ${err.message}\n\n${clientUsage()}`);
    return EXIT.usage;
  }
  if (args.help) {
    io.stdout.write(clientUsage());
    return EXIT.ok;
  }
  const client = new AcpdClient({
    baseUrl: args.url,
    ...(args.token === undefined ? {} : { token: args.token }),
  });
  try {
    if (args.command === 'sessions') {
      const sessions = await allSessions(client);
      io.stdout.write(args.json ? `${JSON.stringify(sessions, null, 2)}\n` : sessionTable(sessions));
      return EXIT.ok;
    }
    return await chat(client, args, io, env);
  } catch (err) {
    io.stderr.write(`acpd: ${explain(err, args.url)}\n`);
    return EXIT.failed;
  }
}
