// Run GraphQL Code Generator's typescript plugin on an SDL file; print the generated code.
//   node codegen.mjs SCHEMA.graphql
import { generate } from "@graphql-codegen/cli";

const [schema] = process.argv.slice(2);
const [output] = await generate(
  { schema, generates: { "types.ts": { plugins: ["typescript"] } }, silent: true },
  false,
);
process.stdout.write(output.content);
