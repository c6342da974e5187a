// Every string the pages show, one file per language. A key missing in one language is a
// bug: tests/e2e checks that both have the same keys.
import en from '/assets/strings/en.js';
import de from '/assets/strings/de.js';

export const STRINGS = { en, de };
