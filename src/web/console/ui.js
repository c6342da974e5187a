// Small pieces every view builds with.
import { $ } from '/assets/common.js';
import { t, errorText } from '/assets/i18n.js';

// A form whose submission calls the API: the error line is cleared first and shows what
// went wrong (by default the API error in the page's language).
export function onSubmit(form, errorLine, handler, describe = errorText) {
  $(form).addEventListener('submit', (event) => {
    event.preventDefault();
    reporting(errorLine, () => handler(event), describe);
  });
}

// Runs an API action, clearing `errorLine` first and showing what went wrong there.
export async function reporting(errorLine, handler, describe = errorText) {
  $(errorLine).textContent = '';
  try {
    await handler();
  } catch (e) {
    $(errorLine).textContent = describe(e);
  }
}

export function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

// What an empty list says instead of nothing.
export function emptyNote(tag, key) {
  const note = document.createElement(tag);
  note.className = 'empty muted';
  note.textContent = t(key);
  return note;
}

export function emptyRow(columns, key) {
  const row = document.createElement('tr');
  const td = document.createElement('td');
  td.colSpan = columns;
  td.className = 'empty muted';
  td.textContent = t(key);
  row.append(td);
  return row;
}
