// Stills: a snapshot as a figure with its annotations, and the viewer that shows one at
// full resolution.
import { $ } from '/assets/common.js';
import { t, time } from '/assets/i18n.js';
import { render } from '/assets/draw.js';

// A still with its annotations drawn over it.
export function stillFigure(sessionId, still) {
  const figure = document.createElement('figure');
  figure.dataset.still = still.id;
  const stage = document.createElement('div');
  stage.className = 'stage';
  const img = document.createElement('img');
  img.alt = t('session.snapshot-alt');
  const canvas = document.createElement('canvas');
  stage.append(img, canvas);
  img.addEventListener('load', () => render(canvas, img, still.annotations ?? []));
  img.src = `/api/sessions/${sessionId}/stills/${still.id}`;
  const caption = document.createElement('figcaption');
  caption.textContent = `${time(still.at_ms)} · ${still.width}×${still.height}`;
  const open = document.createElement('button');
  open.className = 'still-open';
  open.textContent = t('stills.view-full-size');
  open.addEventListener('click', () => openStill(sessionId, still));
  stage.addEventListener('click', () => openStill(sessionId, still));
  figure.append(stage, caption, open);
  return figure;
}

// The full-resolution still, to read a serial number off it: fit to the window, zoom in
// steps or with the wheel, pan by dragging, download the original file.
const viewer = { scale: 1, fit: 1 };

function openStill(sessionId, still) {
  const img = $('#still-full');
  const url = `/api/sessions/${sessionId}/stills/${still.id}`;
  $('#still-viewer-info').textContent = `${time(still.at_ms)} · ${still.width}×${still.height}`;
  const download = $('#still-download');
  download.href = url;
  download.download = `sightline-${sessionId.slice(0, 8)}-${still.id.slice(0, 8)}.${still.content_type.split('/')[1] ?? 'jpg'}`;
  img.onload = () => {
    const pane = $('#still-pane');
    viewer.fit = Math.min(1, pane.clientWidth / img.naturalWidth, pane.clientHeight / img.naturalHeight) || 1;
    zoomTo(viewer.fit);
  };
  img.src = url;
  $('#still-viewer').showModal();
}

function zoomTo(scale, around) {
  const img = $('#still-full');
  const pane = $('#still-pane');
  const before = viewer.scale;
  viewer.scale = Math.min(8, Math.max(viewer.fit, scale));
  img.style.width = `${Math.round(img.naturalWidth * viewer.scale)}px`;
  $('#still-scale').textContent = `${Math.round(viewer.scale * 100)} %`;
  // Keep the point under the cursor (or the centre) where it was.
  const [x, y] = around ?? [pane.clientWidth / 2, pane.clientHeight / 2];
  const ratio = viewer.scale / before;
  pane.scrollLeft = (pane.scrollLeft + x) * ratio - x;
  pane.scrollTop = (pane.scrollTop + y) * ratio - y;
}

$('#still-fit').addEventListener('click', () => zoomTo(viewer.fit));
$('#still-actual').addEventListener('click', () => zoomTo(1));
$('#still-zoom-in').addEventListener('click', () => zoomTo(viewer.scale * 1.5));
$('#still-zoom-out').addEventListener('click', () => zoomTo(viewer.scale / 1.5));
$('#still-close').addEventListener('click', () => $('#still-viewer').close());
$('#still-pane').addEventListener('wheel', (event) => {
  event.preventDefault();
  const box = $('#still-pane').getBoundingClientRect();
  zoomTo(viewer.scale * (event.deltaY < 0 ? 1.25 : 0.8), [event.clientX - box.left, event.clientY - box.top]);
}, { passive: false });
{
  let drag = null;
  const pane = $('#still-pane');
  pane.addEventListener('pointerdown', (event) => {
    drag = { x: event.clientX, y: event.clientY, left: pane.scrollLeft, top: pane.scrollTop };
    pane.setPointerCapture(event.pointerId);
  });
  pane.addEventListener('pointermove', (event) => {
    if (!drag) return;
    pane.scrollLeft = drag.left - (event.clientX - drag.x);
    pane.scrollTop = drag.top - (event.clientY - drag.y);
  });
  pane.addEventListener('pointerup', () => { drag = null; });
}
