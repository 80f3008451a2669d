/**
 * RFC 7240 `Prefer`: whether a request asks for `respond-async`. The header
 * may come several times, each a comma-separated list of preferences, each a
 * token with an optional `=value` and `;` parameters; names are
 * case-insensitive. Quoted commas are rare enough in the wild that a value
 * holding one only risks a false "no".
 */
export function prefersRespondAsync(header: string | string[] | undefined): boolean {
  if (header === undefined) return false;
  const lines = Array.isArray(header) ? header : [header];
  return lines.some((line) =>
    line.split(',').some((preference) => {
      const name = preference.split(';')[0]?.split('=')[0]?.trim().toLowerCase();
      return name === 'respond-async';
    }),
  );
}
