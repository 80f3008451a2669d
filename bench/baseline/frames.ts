// The SSE frames acpd writes for a flood-agent chunk, built byte for byte without acpd: the raw
// baseline writes exactly these, and the bench checks them against what acpd really sent.
import { STAMP_DIGITS } from '../agents/flood-agent-stamp.js';

/** `id: <id>\nevent: session_update\ndata: <envelope JSON>\n\n` with a zeroed stamp. */
export function floodFrame(id: number, sessionId: string, i: number, count: number): string {
  const envelope = {
    id,
    v: 1,
    type: 'session_update',
    // Key order as acpd writes it: the ACP SDK rebuilds each update while validating it.
    data: {
      sessionId,
      update: {
        content: { text: `flood ${i}/${count} @${'0'.repeat(STAMP_DIGITS)}\n`, type: 'text' },
        sessionUpdate: 'agent_message_chunk',
      },
    },
  };
  return `id: ${id}\nevent: session_update\ndata: ${JSON.stringify(envelope)}\n\n`;
}

const STAMP_RE = new RegExp(`@(\\d{${STAMP_DIGITS}})`);

/** The stamp (ms, monotonic) a frame carries, or NaN. */
export function stampOf(frame: string): number {
  const m = STAMP_RE.exec(frame);
  return m ? Number(m[1]) / 1e6 : Number.NaN;
}

/** The frame with its stamp zeroed, for byte comparisons. */
export function unstamped(frame: string): string {
  return frame.replace(STAMP_RE, `@${'0'.repeat(STAMP_DIGITS)}`);
}
