// Translations for the customer page and the console: English and German, chosen from
// the browser's language and switchable. Elements carry their key in data-i18n (text),
// data-i18n-placeholder, data-i18n-aria-label or data-i18n-alt; scripts use t(key).
import { STRINGS } from '/assets/strings.js';

export const LANGUAGES = { en: 'English', de: 'Deutsch' };

function initial() {
  const saved = localStorage.getItem('sightline-language');
  if (saved in LANGUAGES) return saved;
  for (const tag of navigator.languages ?? [navigator.language]) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (base in LANGUAGES) return base;
  }
  return 'en';
}

let language = initial();
const listeners = [];

export function currentLanguage() {
  return language;
}

export function t(key, vars = {}) {
  const text = STRINGS[language]?.[key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

// Codes whose server message says what exactly was wrong (which field, which rule): the
// translation is general, so the detail follows it.
const DETAILED = new Set(['invalid', 'conflict', 'bad_request', 'not_allowed', 'bad_message', 'unexpected', 'delivery_failed', 'invalid_recipient']);

// Text of an API or signaling error in the page's language, by its code. The codes are
// the appliance's (one list, checked against these strings by its tests); an unknown one
// falls back to the server's sentence.
export function errorText(error) {
  const key = `err.${error.code}`;
  if (!(key in STRINGS.en)) return error.message ?? String(error);
  if (DETAILED.has(error.code) && error.message) {
    return language === 'en' ? sentence(error.message) : `${t(key)} (${error.message})`;
  }
  return t(key, error.body ?? error);
}

// Dates and times in the chosen language, not the browser's.
const LOCALES = { en: 'en-GB', de: 'de-DE' };
export function when(ms) {
  return ms ? new Date(ms).toLocaleString(LOCALES[language]) : '—';
}
export function time(ms) {
  return new Date(ms).toLocaleTimeString(LOCALES[language]);
}

function sentence(text) {
  const s = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

export function translate(root = document) {
  document.documentElement.lang = language;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const [attr, data] of [['placeholder', 'i18nPlaceholder'], ['aria-label', 'i18nAriaLabel'], ['alt', 'i18nAlt']]) {
    for (const el of root.querySelectorAll(`[data-${attr === 'aria-label' ? 'i18n-aria-label' : `i18n-${attr}`}]`)) {
      el.setAttribute(attr, t(el.dataset[data]));
    }
  }
}

export function setLanguage(next) {
  if (!(next in LANGUAGES)) return;
  language = next;
  localStorage.setItem('sightline-language', next);
  translate();
  for (const listener of listeners) listener();
}

export function onLanguageChange(listener) {
  listeners.push(listener);
}

export function languagePicker(select) {
  select.replaceChildren(...Object.entries(LANGUAGES).map(([code, name]) => new Option(name, code)));
  select.value = language;
  select.addEventListener('change', () => setLanguage(select.value));
}
