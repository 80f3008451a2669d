// Turns the --agent command into argv: shell quoting, but never a shell.

/**
 * Splits a command line into argv the way a POSIX shell would quote it, and
 * nothing more: whitespace separates words, '…' keeps everything literally,
 * "…" groups and lets a backslash escape " \ $ and `, and an unquoted
 * backslash escapes any character. No variables, globs, pipes or
 * redirections: those characters stay literal. Throws SyntaxError.
 */
export function splitCommand(command: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;

  for (let i = 0; i < command.length; i++) {
    const c = command[i];
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else word += c;
      continue;
    }
    if (quote === '"') {
      if (c === '"') {
        quote = undefined;
      } else if (c === '\\' && i + 1 < command.length && '"\\$`\n'.includes(command[i + 1])) {
        i++;
        if (command[i] !== '\n') word += command[i];
      } else {
        word += c;
      }
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      continue;
    }
    if (c === '\\') {
      if (i + 1 >= command.length) throw new SyntaxError('it ends with a lone backslash');
      i++;
      // Backslash-newline continues the line, as in a shell.
      if (command[i] === '\n') continue;
      word += command[i];
      inWord = true;
      continue;
    }
    inWord = true;
    if (c === "'" || c === '"') quote = c;
    else word += c;
  }
  if (quote !== undefined) {
    throw new SyntaxError(`a ${quote === '"' ? 'double' : 'single'} quote is not closed`);
  }
  if (inWord) words.push(word);
  return words;
}
