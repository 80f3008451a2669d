/** The routes an app really serves, read from its router. */

export interface AppRoute {
  method: string;
  url: string;
}

/**
 * The routes in `app.printRoutes({ commonPrefix: false })`, the router's own listing: a tree of path
 * pieces, four columns per level, methods in parentheses on the nodes that are routes.
 */
export function routesFromTree(tree: string): AppRoute[] {
  const routes: AppRoute[] = [];
  const stack: string[] = [];
  for (const line of tree.split('\n')) {
    const match = /^((?:│ {3}| {4})*)(?:├── |└── )(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!match) continue;
    const depth = match[1].length / 4;
    stack.length = depth;
    stack.push(match[2]);
    if (match[3] === undefined) continue;
    const url = stack.join('');
    for (const method of match[3].split(', ')) routes.push({ method, url });
  }
  return routes;
}
