/** Whether a checkout's dist/ holds a build of its sources as they are now (bin/built.js). `root`: the checkout, a file: URL ending in `/`. */
export function isBuilt (root: string | URL): boolean
