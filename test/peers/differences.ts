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
    'acpd has since adopted the agent-agnostic ones (epochs, `replay_complete`, the non-blocking prompt, the prompt echo, ' +
    '`turn_complete`, close and status); what still differs is explained row by row.',
};

const N = `${NEWER_QWEN}:`;

export const knownDifferences: Record<string, string> = {
  'caps.extra': `${N} it advertises its later features (qwen's own agent's among them); acpd advertises the v1 set plus the agent-agnostic ones it adopted (non_blocking_prompt, session_close, session_status, session_turn_status) and its own (idempotency_keys, durable_replay)`,
  's1.promptHttp': `${N} 0.24 always answers 202 and ends the turn with a turn_complete frame; acpd answers 202 only to \`Prefer: respond-async\` and keeps v1's blocking 200 {stopReason} otherwise (the published client accepts both); its turn_complete frame is there either way`,
  's1.idless': `acpd's own: after replay_complete (which both send on every subscribe) acpd adds one session_state frame (no id): the running turn, waiting permission requests and prompts, so a reconnecting client need not rebuild them; the published client passes it through`,
  's1.nonV1': `both send the newer qwen frames (turn_complete, replay_complete, prompt_cancelled, permission_already_resolved…); acpd adds its session_state (see "frames without id")`,
  's4.replayIdless': `acpd's session_state after replay_complete (see scenario 1, "frames without id")`,
  's5.loadHistory': `both answer the history in the load body (compactedReplay); acpd replays it over SSE as well only when the session's event log is empty (v1 §2.3), since a durable log already holds those frames under their old ids`,
  'load response body (compactedReplay)': `acpd merges each run of chunks of one kind into one update; qwen 0.24 keeps some runs apart`,
  's5.loadIdless': `acpd's session_state after replay_complete (see scenario 1, "frames without id")`,
  's7.features': `acpd advertises workspace_file_write and workspace_file_upload only when it serves them, with --allow-file-writes (the peers run starts it without; qwen 0.24 writes by default); the GitHub routes (workspace_github_setup, workspace_github_prs) are qwen's own and not served`,
};

/** Rows of all frames include the non-v1 frames, so they differ whenever those do. */
export const allFramesReason = `the frames outside v1 differ (acpd's session_state, see "frames without id"); compare the "v1 core" rows`;

/**
 * acpd over REST against acpd over `/acp`: the same daemon, the published client on the ACP transport it
 * negotiates from `/capabilities.transports` (`AcpHttpTransport` of `@qwen-code/sdk/daemon/transports`), which
 * maps each REST call to one JSON-RPC message. Keys as above. What the client changes on its own side (event
 * and error shapes, see adaptations) is undone before the checks, so it shows in no row.
 */
export const acpDifferences: Record<string, string> = {
  's1.promptHttp': `the transport: over \`/acp\` the client POSTs \`session/prompt\` as a JSON-RPC request, which Streamable HTTP acknowledges with 202; the answer ({stopReason}) comes on the session's stream after the turn's updates`,
  's3.cancelHttp': `the transport: the client sends \`session/cancel\` as a JSON-RPC notification, which Streamable HTTP acknowledges with 202 (no answer follows)`,
  's6.streamEnds': `acpd's own, over \`/acp\`: the session's stream carries the answers about the session as well as its events, so it outlives the session's death (session_died is delivered, then nothing); answers still due (a close's, a failed prompt's) go out on it, and the client would take the stream's end for the failure of every request waiting there. The client starts a new stream on resume`,
};

/** The all-frames rows over `/acp`. */
export const acpAllFramesReason = `the agent sends available_commands_update from a timer, so its place among the frames varies from run to run; compare the "v1 core" rows`;

/**
 * What the published client does differently over ACP, undone in one place before any check reads it
 * (observe.ts restShaped, scenarios.ts errorShape, observe.ts recordingFetch). The client's doing, not acpd's:
 * on the wire acpd sends ACP's own shapes.
 */
export const acpAdaptations: string[] = [
  "`session/update` notifications become events whose `type` is the update's kind (`agent_message_chunk`, …) and whose `data` is the update plus `sessionId`; they are put back as `type: 'session_update'`, `data: {sessionId, update}`. The daemon's other frames arrive as `_qwen/notify` and come out as the REST events already",
  "a REST error comes back as the JSON-RPC error's data (acpd's envelope plus `httpStatus`); the client's DaemonHttpError keeps the HTTP status but its body is `{error, data: {code, …}}`, so the code is read from `data.code`",
  "`POST /session` drops `sessionScope` (the client maps it to `session/new` without it): acpd gives the daemon's client its default scope (`single`), as a REST `POST /session` without a scope gets, so scenario 4's attach works; a client asking for `thread` over `/acp` cannot get it",
  'every call is `POST /acp`: the HTTP log names its JSON-RPC method (`POST /acp session/prompt → 202`)',
  "scenario 7: the file reads go over `/acp` as `_qwen/file/read`, `read_bytes`, `stat`, `list` and `glob` (acpd serves them by the REST routes, so their checks and answers are the same); the client sends the workspace git calls over REST whatever its transport (they are `mode: 'rest'` in the client), so that column's git rows are REST answers",
];
