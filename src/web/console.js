// The technician's console: its entry. Each view lives in a module under console/ that
// registers itself with console/nav.js; this one wires the navigation and starts.
import { $, show, api } from '/assets/common.js';
import { translate, languagePicker, onLanguageChange } from '/assets/i18n.js';
import { state } from '/assets/console/state.js';
import { go } from '/assets/console/nav.js';
import { proceed } from '/assets/console/signin.js';
import { dashboard } from '/assets/console/dashboard.js';
import '/assets/console/admin.js';
import '/assets/console/data.js';
import { redrawReports } from '/assets/console/reports.js';
import '/assets/console/record.js';
import { setStatus, closeSession } from '/assets/console/session.js';
import { drawing } from '/assets/console/drawing.js';

// Exposed for diagnostics and the browser tests.
window.sightline = {
  get pc() { return state.current?.pc ?? null; },
  get sessionId() { return state.current?.id ?? null; },
  get session() { return state.current?.session ?? null; },
  get frozenDigest() { return state.current?.frozenDigest ?? null; },
  get shapes() { return drawing.shapes; },
};

onLanguageChange(() => {
  if (state.current?.session) setStatus(state.current.session);
  if (!$('#dashboard').hidden) dashboard();
  redrawReports();
});

for (const button of document.querySelectorAll('[data-nav]')) {
  button.addEventListener('click', () => {
    closeSession();
    go(button.dataset.nav);
  });
}

$('#back').addEventListener('click', () => {
  closeSession();
  dashboard();
});

async function start() {
  languagePicker($('#language'));
  translate();
  const setup = await api('/setup');
  if (setup.needed) return show('setup');
  try {
    proceed(await api('/me'));
  } catch {
    show('login');
  }
}

start();
