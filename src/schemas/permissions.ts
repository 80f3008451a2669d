/** Schemas of the permission vote route. */
import { Type, type Static } from '@sinclair/typebox';
import { errors } from './errors.js';

const OUTCOME_MESSAGE = '`outcome` must be `{ outcome: "cancelled" }` or `{ outcome: "selected", optionId: string }`';

export const VoteBody = Type.Object(
  {
    outcome: Type.Union(
      [
        Type.Object(
          { outcome: Type.Literal('cancelled') },
          { additionalProperties: true, errorMessage: OUTCOME_MESSAGE },
        ),
        Type.Object(
          { outcome: Type.Literal('selected'), optionId: Type.String({ minLength: 1, errorMessage: OUTCOME_MESSAGE }) },
          { additionalProperties: true, errorMessage: OUTCOME_MESSAGE },
        ),
      ],
      { errorMessage: OUTCOME_MESSAGE },
    ),
  },
  {
    additionalProperties: true,
    description: 'The ACP RequestPermissionResponse; other fields go to the agent as they are.',
  },
);
export type VoteBody = Static<typeof VoteBody>;

export const vote = {
  operationId: 'votePermission',
  tags: ['permissions'],
  summary: 'Answer a pending permission request',
  description:
    "A vote on the agent's request. Under --permission-policy `first-responder` (the default) any client with the `approve` scope may answer any request: the first answer wins, later ones get 404. `designated` counts only the user who sent the turn's prompt, `consensus` one vote per user until --consensus-quorum users chose the same option, `local-only` only loopback clients. `permission_resolved` follows as an event once the request is settled.",
  params: Type.Object({
    requestId: Type.String({ description: 'The `requestId` of a `permission_request` event.' }),
  }),
  body: VoteBody,
  response: {
    200: Type.Object({}, { description: 'The vote was taken.' }),
    ...errors('permissionNotFound', 'invalidOption', 'voteNotAllowed', 'voteAlreadyCast'),
  },
};
