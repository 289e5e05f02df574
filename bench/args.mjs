// `--key value` command-line options over a table of defaults; a number
// default makes the value a number. Shared by the bench scripts.
export function parseArgs(argv, defaults) {
  const opts = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in opts)) throw new Error(`unknown option ${argv[i]} (known: ${Object.keys(opts).map((k) => `--${k}`).join(' ')})`);
    const value = argv[++i];
    if (value === undefined) throw new Error(`${argv[i - 1]} needs a value`);
    opts[key] = typeof opts[key] === 'number' ? Number(value) : value;
  }
  return opts;
}
