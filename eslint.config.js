// ESLint flat config: typescript-eslint's type-checked rules over everything
// tsc compiles (src, test, harness, bench). The rules that catch what review
// misses most often here — a promise nobody awaits or catches, a promise
// passed where a plain callback is expected — are errors.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // test/generated/ is openapi-typescript's output (npm run openapi:types), checked against the document instead.
  { ignores: ['dist/', 'build/', '.peers/', 'node_modules/', 'bench/results/', 'test/generated/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { project: './tsconfig.test.json', tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // tap's t.test() returns a promise that tap itself awaits: it is safe to leave.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafePromises: [{ from: 'package', name: 'PromiseWithSubtest', package: '@tapjs/core' }] },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      // Fastify plugins, hooks and handlers, and tap's test bodies, are async by
      // contract whether or not they await anything.
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // acpd/client runs in browsers as the very files tsc emits: it may load only its own modules. Types
    // from elsewhere (the route schemas, TypeBox) are fine, as type-only imports leave no trace in the JS.
    files: ['src/client/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(?!\\./)',
              allowTypeImports: true,
              message: 'acpd/client runs in browsers: import only ./ files at run time (use `import type` for others).',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    // The web console's scripts run in the browser as they are (routes/console.ts serves them).
    files: ['src/console/**/*.js'],
    languageOptions: {
      globals: Object.fromEntries(
        [
          'AbortController',
          'URL',
          'clearTimeout',
          'document',
          'history',
          'localStorage',
          'location',
          'sessionStorage',
          'setTimeout',
        ].map((name) => [name, 'readonly']),
      ),
    },
  },
);
