// Compose meshflow's subgraph with a small "reviews" subgraph behind a real Apollo Gateway,
// run one query (argv[3], JSON variables in argv[4]) through it and print the answer as JSON.
// Everything listens on loopback on ports the OS picks, and stops before the script ends.
//   node federate.mjs MESHFLOW_GRAPHQL_URL QUERY [VARIABLES_JSON]
import { ApolloGateway, IntrospectAndCompose } from "@apollo/gateway";
import { ApolloServer } from "@apollo/server";
import { ApolloServerPluginInlineTraceDisabled } from "@apollo/server/plugin/disabled";
import { startStandaloneServer } from "@apollo/server/standalone";
import { buildSubgraphSchema } from "@apollo/subgraph";
import { parse } from "graphql";

const [meshflowUrl, query, variables] = process.argv.slice(2);

const REVIEWS = [
  { id: "r1", body: "Fits well", stars: 5, product: "p1" },
  { id: "r2", body: "Too tight", stars: 2, product: "p1" },
  { id: "r3", body: "Comfortable", stars: 4, product: "p2" },
];

const typeDefs = parse(`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key"])

  type Review {
    id: ID!
    body: String!
    stars: Int!
    product: Product!
  }

  type Product @key(fields: "id") {
    id: ID!
    reviews: [Review!]!
  }

  type Query {
    reviews: [Review!]!
  }
`);

const resolvers = {
  Query: { reviews: () => REVIEWS },
  Review: { product: (review) => ({ __typename: "Product", id: review.product }) },
  Product: {
    reviews: (product) => REVIEWS.filter((r) => r.product === product.id),
    __resolveReference: (ref) => ({ id: ref.id }),
  },
};

const servers = [];
try {
  const reviews = new ApolloServer({
    schema: buildSubgraphSchema([{ typeDefs, resolvers }]),
    plugins: [ApolloServerPluginInlineTraceDisabled()],
  });
  servers.push(reviews);
  const { url: reviewsUrl } = await startStandaloneServer(reviews, {
    listen: { host: "127.0.0.1", port: 0 },
  });

  const gateway = new ApolloGateway({
    supergraphSdl: new IntrospectAndCompose({
      subgraphs: [
        { name: "meshflow", url: meshflowUrl },
        { name: "reviews", url: reviewsUrl },
      ],
    }),
  });
  const router = new ApolloServer({ gateway });
  servers.push(router);
  const { url } = await startStandaloneServer(router, { listen: { host: "127.0.0.1", port: 0 } });

  const answer = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query, variables: variables ? JSON.parse(variables) : {} }),
  });
  process.stdout.write(JSON.stringify(await answer.json()));
} finally {
  for (const server of servers.reverse()) await server.stop();
}
