// Svelte 5 reads the TypeScript in components itself: nothing to preprocess.
export default {};
