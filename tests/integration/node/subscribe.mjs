// One subscription through the graphql-ws client (graphql-transport-ws), reported as JSON
// lines: {"event": "next", "payload"}, {"event": "complete"}, {"event": "error", "error"},
// {"event": "closed", "code", "reason"}.
// Usage: node --experimental-websocket subscribe.mjs URL QUERY [VARIABLES_JSON]
// MESHFLOW_TOKEN, when set, goes in the connection_init payload as {"authorization": "Bearer ..."}.
import { createClient } from 'graphql-ws';

const [url, query, variables] = process.argv.slice(2);
const token = process.env.MESHFLOW_TOKEN;

function report(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

const client = createClient({
  url,
  webSocketImpl: globalThis.WebSocket,
  connectionParams: token ? { authorization: `Bearer ${token}` } : {},
  retryAttempts: 0, // a refusal is the answer under test: never retried
  lazy: true,
  on: {
    closed: (event) => report({ event: 'closed', code: event.code, reason: event.reason }),
  },
});

await new Promise((resolve) => {
  client.subscribe(
    { query, variables: variables ? JSON.parse(variables) : undefined },
    {
      next: (payload) => report({ event: 'next', payload }),
      error: (error) => {
        const described = Array.isArray(error)
          ? { errors: error }
          : { code: error?.code, reason: error?.reason, message: String(error?.message ?? error) };
        report({ event: 'error', error: described });
        resolve();
      },
      complete: () => {
        report({ event: 'complete' });
        resolve();
      },
    },
  );
});
await client.dispose();
