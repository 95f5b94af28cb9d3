import neostandard from 'neostandard'
import globals from 'globals'
import tseslint from 'typescript-eslint'

/** Only the files that assemble and start the app may use Fastify: the rest of src/ is the core. */
const FASTIFY = ['fastify', 'fastify-plugin', '@fastify/*']
const APP_ASSEMBLY = ['src/app.ts', 'src/server.ts', 'src/worker.ts']

export default [
  // The style the code follows: standard (no semicolons, space before parens...), in its TypeScript mode.
  ...neostandard({ ts: true, ignores: ['node_modules/', 'coverage/', '.tap/', 'data/', 'dist/'] }),
  {
    // Promises that nobody awaits, or that are passed where a plain callback is expected, lose
    // their errors (an unhandled rejection stops the process): the service's own code has none.
    files: ['src/**/*.ts', 'plugins/**/*.ts', 'routes/**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      // `void promise` is how a promise left running on purpose is marked for no-floating-promises.
      'no-void': ['error', { allowAsStatement: true }]
    }
  },
  {
    files: ['src/**/*.ts'],
    ignores: APP_ASSEMBLY,
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ group: FASTIFY, message: 'src/ is the core: only app.ts, server.ts and worker.ts import Fastify (the glue is in plugins/ and routes/)' }]
      }]
    }
  },
  {
    // The dashboard's browser script.
    files: ['public/**/*.js'],
    languageOptions: { sourceType: 'script', globals: { ...globals.browser, Chart: 'readonly' } }
  }
]
