// `acpd sessions`: the workspace's sessions, live and remembered, as a table or as JSON.
import type { AcpdClient, SessionList } from '../client/index.js';

type Summary = SessionList['sessions'][number];

/** Every page of the catalog, newest first. */
export async function allSessions(client: AcpdClient): Promise<Summary[]> {
  const sessions: Summary[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.listSessions({ size: 1000, ...(cursor === undefined ? {} : { cursor }) });
    sessions.push(...page.sessions);
    cursor = page.nextCursor;
  } while (cursor !== undefined);
  return sessions;
}

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/** A plain text table: the columns a person scans for (which are live, which are busy), then the name. */
export function sessionTable(sessions: readonly Summary[]): string {
  if (sessions.length === 0) return 'no sessions\n';
  const rows = [
    ['SESSION', 'STATE', 'CLIENTS', 'UPDATED', 'NAME'],
    ...sessions.map((s) => [
      s.sessionId,
      s.isLive ? (s.hasActivePrompt ? 'running' : 'live') : 'stored',
      String(s.clientCount),
      s.updatedAt.replace('T', ' ').replace(/\.\d+Z$|Z$/, ''),
      oneLine(s.displayName ?? '', 50),
    ]),
  ];
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((row) => (row[col] ?? '').length))) ?? [];
  return (
    rows
      .map((row) =>
        row
          .map((cell, col) => cell.padEnd(widths[col] ?? 0))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}
