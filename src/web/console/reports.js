// Reports: the account's session figures for an account admin, one's own for a
// technician — totals, sessions per day or week and per technician as SVG charts drawn
// here (no library, no CDN), tables by technician and group, and the same figures as CSV.
import { $, show, api } from '/assets/common.js';
import { t, currentLanguage } from '/assets/i18n.js';
import { register } from '/assets/console/nav.js';
import { reporting, cell, emptyRow } from '/assets/console/ui.js';

const DAY = 24 * 3600 * 1000;
const SVG = 'http://www.w3.org/2000/svg';
const LOCALES = { en: 'en-GB', de: 'de-DE' };

let last = null;

const locale = () => LOCALES[currentLanguage()] ?? 'en-GB';

function duration(secs) {
  if (secs === null || secs === undefined) return '—';
  const h = Math.floor(secs / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  if (h) return t('reports.hms', { h, m, s });
  return m ? t('reports.ms', { m, s }) : t('reports.s', { s });
}

function percent(rate) {
  if (rate === null || rate === undefined) return '—';
  return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 1 }).format(rate);
}

function day(ms) {
  return new Date(ms).toLocaleDateString(locale(), { timeZone: 'UTC', day: 'numeric', month: 'short' });
}

function isoDate(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

function query() {
  const params = new URLSearchParams({ bucket: $('#reports-bucket').value });
  if ($('#reports-since').value) params.set('since_ms', Date.parse(`${$('#reports-since').value}T00:00:00Z`));
  if ($('#reports-until').value) params.set('until_ms', Date.parse(`${$('#reports-until').value}T00:00:00Z`) + DAY);
  return params;
}

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// Sessions per period: a bar each, the declined part of it in red.
function periodChart(periods) {
  const width = 720;
  const height = 200;
  const left = 32;
  const bottom = 22;
  const max = Math.max(1, ...periods.map((p) => p.sessions));
  const slot = (width - left) / periods.length;
  const scale = (n) => (n / max) * (height - bottom - 10);
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': t('reports.chart-label') });
  chart.append(svg('line', { class: 'axis', x1: left, y1: height - bottom, x2: width, y2: height - bottom }));
  chart.append(svg('text', { x: left - 6, y: 14, 'text-anchor': 'end' }, String(max)));
  chart.append(svg('text', { x: left - 6, y: height - bottom, 'text-anchor': 'end' }, '0'));
  const every = Math.ceil(periods.length / 8);
  periods.forEach((p, i) => {
    const x = left + i * slot + slot * 0.15;
    const w = Math.max(1, slot * 0.7);
    const bar = svg('rect', { class: 'bar', x, y: height - bottom - scale(p.sessions), width: w, height: scale(p.sessions), 'data-start': p.start_ms, 'data-sessions': p.sessions });
    bar.append(svg('title', {}, t('reports.bar-title', { when: day(p.start_ms), n: p.sessions, declined: p.declined })));
    chart.append(bar);
    if (p.declined) {
      chart.append(svg('rect', { class: 'bar declined', x, y: height - bottom - scale(p.declined), width: w, height: scale(p.declined) }));
    }
    if (i % every === 0) chart.append(svg('text', { x: x + w / 2, y: height - 6, 'text-anchor': 'middle' }, day(p.start_ms)));
  });
  return chart;
}

// Sessions per technician: one horizontal bar each.
function technicianChart(lines) {
  const width = 720;
  const row = 26;
  const label = 180;
  const max = Math.max(1, ...lines.map((l) => l.sessions));
  const chart = svg('svg', { viewBox: `0 0 ${width} ${Math.max(row, lines.length * row)}`, role: 'img', 'aria-label': t('reports.by-technician') });
  lines.forEach((l, i) => {
    const y = i * row;
    const w = ((width - label - 40) * l.sessions) / max;
    chart.append(svg('text', { x: label - 8, y: y + 17, 'text-anchor': 'end' }, l.name));
    chart.append(svg('rect', { class: 'bar', x: label, y: y + 5, width: Math.max(1, w), height: row - 10, 'data-name': l.name, 'data-sessions': l.sessions }));
    chart.append(svg('text', { x: label + w + 6, y: y + 17 }, String(l.sessions)));
  });
  return chart;
}

function lineRow(line) {
  const row = document.createElement('tr');
  row.dataset.id = line.id;
  row.append(cell(line.name), cell(String(line.sessions)), cell(duration(line.median_duration_secs)), cell(duration(line.p90_duration_secs)),
    cell(percent(line.declined_rate)), cell(percent(line.microphone_rate)), cell(String(line.recordings)));
  return row;
}

function render(report) {
  $('#reports-scope').textContent = t(report.scope === 'account' ? 'reports.scope-account' : 'reports.scope-own');
  const f = report.totals;
  const tiles = [
    ['sessions', 'reports.sessions', String(f.sessions)],
    ['median', 'reports.median', duration(f.median_duration_secs)],
    ['p90', 'reports.p90', duration(f.p90_duration_secs)],
    ['declined', 'reports.declined', percent(f.declined_rate)],
    ['microphone', 'reports.microphone', percent(f.microphone_rate)],
    ['recordings', 'reports.recordings', String(f.recordings)],
  ];
  $('#reports-totals').replaceChildren(...tiles.map(([name, key, value]) => {
    const tile = document.createElement('div');
    tile.dataset.figure = name;
    const dt = document.createElement('dt');
    dt.textContent = t(key);
    const dd = document.createElement('dd');
    dd.textContent = value;
    tile.append(dt, dd);
    return tile;
  }));
  $('#reports-chart-title').textContent = t(report.bucket === 'week' ? 'reports.sessions-per-week' : 'reports.sessions-per-day');
  $('#reports-chart').replaceChildren(periodChart(report.periods));
  $('#reports-technician-chart').replaceChildren(technicianChart(report.technicians));
  $('#reports-technicians').replaceChildren(...report.technicians.map(lineRow));
  if (!report.technicians.length) $('#reports-technicians').append(emptyRow(7, 'reports.none'));
  $('#reports-groups-card').hidden = report.scope !== 'account';
  $('#reports-groups').replaceChildren(...report.groups.map(lineRow));
  if (!report.groups.length) $('#reports-groups').append(emptyRow(7, 'empty.groups'));
}

async function load() {
  const params = query();
  const report = await api(`/reports?${params}`);
  last = report;
  $('#reports-since').value = isoDate(report.since_ms);
  $('#reports-until').value = isoDate(report.until_ms - DAY);
  params.set('since_ms', report.since_ms);
  params.set('until_ms', report.until_ms);
  $('#reports-csv').href = `/api/reports.csv?${params}`;
  render(report);
}

async function reports() {
  show('reports');
  await reporting('#reports-error', load);
}

$('#reports-form').addEventListener('submit', (event) => {
  event.preventDefault();
  reporting('#reports-error', load);
});

// Redrawn in the new language without asking again.
export function redrawReports() {
  if (last && !$('#reports').hidden) render(last);
}

register('reports', reports);
