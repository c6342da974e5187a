// What the console's views share: who is signed in, and the session the live view shows
// ({ id, signal, pc, resource, session, ... }; null when none is open).
export const state = { me: null, current: null };

// Sends a signaling message in the open session, if one is open.
export const send = (message) => state.current?.signal.send(message);
