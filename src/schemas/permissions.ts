/** Schemas of the permission vote route. */
import { Type } from '@sinclair/typebox';
import { commonErrors, ErrorRef } from './common.js';

const OUTCOME_MESSAGE = '`outcome` must be `{ outcome: "cancelled" }` or `{ outcome: "selected", optionId: string }`';

const VoteBody = Type.Object(
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
  { additionalProperties: true },
);

export const vote = {
  summary: 'Answer a pending permission request (first answer wins)',
  params: Type.Object({ requestId: Type.String() }),
  body: VoteBody,
  response: { 200: Type.Object({}), 404: ErrorRef, ...commonErrors },
};
