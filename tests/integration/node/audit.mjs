// The GraphQL-over-HTTP specification's audit (graphql-http's auditServer) against one URL.
// Usage: node audit.mjs URL   (MESHFLOW_TOKEN, when set, goes on every request as a Bearer)
// Prints one JSON array: {id, name, status, reason?, response?} per audit item.
import { auditServer } from 'graphql-http';

const [url] = process.argv.slice(2);
const token = process.env.MESHFLOW_TOKEN;

function fetchFn(input, init = {}) {
  const headers = new Headers(init.headers);
  if (token) headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers, signal: AbortSignal.timeout(30_000) });
}

const results = await auditServer({ url, fetchFn });
const report = [];
for (const result of results) {
  const item = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    item.reason = result.reason;
    const res = result.response;
    let body = '';
    try {
      body = await res.text();
    } catch {
      body = '(body already read by the audit)';
    }
    item.response = { status: res.status, contentType: res.headers.get('content-type'), body };
  }
  report.push(item);
}
process.stdout.write(JSON.stringify(report) + '\n');
