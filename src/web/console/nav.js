// Moving between the console's views: each module registers what opening its views does,
// and any module may open one without importing the module that owns it.
const views = {};

export function register(name, open) {
  views[name] = open;
}

export function go(name, ...args) {
  return views[name](...args);
}
