// Hand-kept reasons for behaviours where acpd deliberately differs from the `qwen serve` it is
// compared with. Keys are fact keys (scenarios.ts) or frame-row names (report.ts). A difference
// that is not listed here shows up in docs/conformance.md as "unexplained": fix acpd, or explain
// it here.

/**
 * Most differences have one cause: acpd implements the v1 contract of
 * ../shared/reference/qwen-serve-v1.md (the qwen daemon at PR #4222), while the `qwen serve` we
 * compare with (@qwen-code/qwen-code 0.24.x) is many releases newer. Its additions are additive on
 * the wire (`v` stays 1) and the SDK copes with both shapes.
 */
const NEWER_QWEN = 'newer qwen';
export const legend: Record<string, string> = {
  [NEWER_QWEN]:
    'qwen 0.24 is many releases newer than the reference revision acpd implements ' +
    '(qwen-serve-v1.md §0); its additions are additive (`v` stays 1) and the SDK accepts both shapes. ' +
    'SPEC §3 lists some of them (epochs, `replay_complete`, the non-blocking prompt) as later acpd issues.',
};

const N = `${NEWER_QWEN}:`;

export const knownDifferences: Record<string, string> = {
  'caps.extra': `${N} it advertises its later features; acpd advertises the v1 set plus what its own issues add`,
  's1.promptHttp': `${N} non_blocking_prompt answers 202 and ends the turn with a turn_complete frame; v1 (§2.3) answers 200 {stopReason}`,
  's1.idless': `${N} replay_complete (no id) after every subscribe`,
  's1.nonV1': `${N} turn_complete, replay_complete, prompt_cancelled, permission_already_resolved, approval_mode_changed… are outside the v1 frame set (§3.3)`,
  's1.echo': `${N} the daemon publishes the prompt itself as user_message_chunk (_meta.source "bridge-echo"); v1 publishes only what the agent sends`,
  's4.replayIdless': `${N} replay_complete after a Last-Event-ID replay`,
  's5.loadHistory': `${N} load answers with the history in its body (compactedReplay, hydrated by the SDK into replaySnapshot) and does not replay it over SSE; acpd follows v1 §2.3/§5.8: the agent's replay goes into the session's ring, read with Last-Event-ID: 0`,
  's5.loadIdless': `${N} event epochs (state_resync_required when Last-Event-ID comes without an epoch) and replay_complete`,
  'after load (v1 core)': `${N} the history is in the load response body, not on SSE (see above)`,
  's5.listAfterRestart':
    'v1 lists the registered (live) sessions only (§2.3 GET /workspace/:id/sessions); qwen 0.24 lists its persisted catalog',
};

/** Rows of all frames include the non-v1 frames, so they differ whenever those do. */
export const allFramesReason = `${N} its extra frames (see "frame types outside v1"); compare the "v1 core" rows`;
