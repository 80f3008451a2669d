// The fixed things the embedded agent offers: its identity, its models and its modes.
// Models are not part of the stable ACP schema any more, so their shape is declared here; it is
// the shape `qwen --acp` and older ACP SDKs use (`models: {availableModels, currentModelId}`).
import type {
  LoadSessionResponse,
  NewSessionResponse,
  ResumeSessionResponse,
  SessionMode,
  SessionModeState,
} from '@agentclientprotocol/sdk';

export const AGENT_NAME = 'acpd-agent';
export const AGENT_TITLE = 'acpd embedded agent';
export const AGENT_VERSION = '0.1.0';

interface ModelInfo {
  modelId: string;
  name: string;
  description?: string;
}

interface SessionModelState {
  availableModels: ModelInfo[];
  currentModelId: string;
}

/** Parameters of the raw `session/set_model` request (not in the stable 2.x schema). */
export interface SetSessionModelRequest {
  sessionId: string;
  modelId: string;
}

export type NewSessionResult = NewSessionResponse & { models: SessionModelState };
export type LoadSessionResult = LoadSessionResponse & { models: SessionModelState };
export type ResumeSessionResult = ResumeSessionResponse & { models: SessionModelState };

const ECHO_MODEL = 'acpd-echo';
export const SHOUT_MODEL = 'acpd-shout';
export const DEFAULT_MODEL = ECHO_MODEL;

const MODELS: readonly ModelInfo[] = [
  { modelId: ECHO_MODEL, name: 'Echo', description: 'Answers plain text with "echo: <text>".' },
  { modelId: SHOUT_MODEL, name: 'Shout', description: 'Like Echo, but the answer is upper-cased.' },
];

export const DEFAULT_MODE = 'default';
export const YOLO_MODE = 'yolo';

const MODES: readonly SessionMode[] = [
  { id: DEFAULT_MODE, name: 'Default', description: 'Ask for permission before writing a file.' },
  { id: YOLO_MODE, name: 'YOLO', description: 'Write files without asking for permission.' },
];

export function isKnownModel(modelId: string): boolean {
  return MODELS.some((model) => model.modelId === modelId);
}

export function isKnownMode(modeId: string): boolean {
  return MODES.some((mode) => mode.id === modeId);
}

export function modelState(currentModelId: string): SessionModelState {
  return { availableModels: MODELS.map((model) => ({ ...model })), currentModelId };
}

export function modeState(currentModeId: string): SessionModeState {
  return { availableModes: MODES.map((mode) => ({ ...mode })), currentModeId };
}
