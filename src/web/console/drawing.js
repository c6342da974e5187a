// Drawing on the live picture (arrows, boxes, pen, labels, the pointer), and freezing it
// on a still to draw on that instead.
import { $, digest } from '/assets/common.js';
import { t } from '/assets/i18n.js';
import { render, normalised, showFrozenStill } from '/assets/draw.js';
import { state, send } from '/assets/console/state.js';

// The tool chosen, the room's drawing as the appliance last sent it, where the pointer
// is, and the shape being drawn now.
export const drawing = { tool: null, shapes: [], pointer: null, sketch: null };

function stageMedia() {
  return $('#frozen').hidden ? $('#remote-video') : $('#frozen');
}

export function redraw() {
  const all = drawing.sketch ? [...drawing.shapes, drawing.sketch] : drawing.shapes;
  render($('#overlay'), stageMedia(), all, drawing.pointer);
}
window.addEventListener('resize', redraw);
$('#remote-video').addEventListener('resize', redraw);

// A new session starts with nothing drawn.
export function clearDrawing() {
  drawing.shapes = [];
  drawing.pointer = null;
}

function choose(tool) {
  drawing.tool = tool;
  for (const b of document.querySelectorAll('#tools [data-tool]')) b.setAttribute('aria-pressed', String(b.dataset.tool === tool));
  $('#stage').classList.toggle('drawing', tool !== null);
}

// Puts the tool down when there is no picture to draw on.
export function putToolDown() {
  if (drawing.tool) choose(null);
}

for (const button of document.querySelectorAll('#tools [data-tool]')) {
  button.addEventListener('click', () => {
    choose(drawing.tool === button.dataset.tool ? null : button.dataset.tool);
    if (drawing.tool !== 'pointer' && drawing.pointer) send({ type: 'pointer', at: null });
  });
}

const overlay = $('#overlay');
overlay.addEventListener('pointerdown', (event) => {
  const { tool } = drawing;
  const at = normalised(event, overlay, stageMedia());
  if (!at || !tool || !state.current) return;
  const color = $('#draw-color').value;
  if (tool === 'text') {
    const text = prompt(t('session.label-prompt'));
    if (text?.trim()) send({ type: 'draw', shape: { kind: 'text', color, at, text: text.trim() } });
    return;
  }
  if (tool === 'pointer') {
    send({ type: 'pointer', at });
    return;
  }
  overlay.setPointerCapture(event.pointerId);
  drawing.sketch = tool === 'pen' ? { kind: 'pen', color, points: [at] } : { kind: tool, color, from: at, to: at };
  redraw();
});
overlay.addEventListener('pointermove', (event) => {
  const at = normalised(event, overlay, stageMedia());
  if (!at || !state.current) return;
  if (drawing.tool === 'pointer' && event.buttons === 0) {
    send({ type: 'pointer', at });
    return;
  }
  const { sketch } = drawing;
  if (!sketch) return;
  if (sketch.kind === 'pen') {
    if (sketch.points.length < 2000) sketch.points.push(at);
  } else {
    sketch.to = at;
  }
  redraw();
});
overlay.addEventListener('pointerup', () => {
  if (drawing.sketch && state.current) send({ type: 'draw', shape: drawing.sketch });
  drawing.sketch = null;
});
overlay.addEventListener('pointerleave', () => {
  if (drawing.tool === 'pointer') send({ type: 'pointer', at: null });
});
$('#undo').addEventListener('click', () => send({ type: 'undo' }));
$('#clear-drawing').addEventListener('click', () => send({ type: 'clear_drawing' }));
$('#freeze').addEventListener('click', () => {
  const frozen = $('#freeze').getAttribute('aria-pressed') !== 'true';
  send({ type: 'freeze', frozen });
});
$('#snapshot').addEventListener('click', () => send({ type: 'snapshot' }));

// Shows the still the picture is frozen on (or the live picture again).
export async function showFrozen(stillId) {
  const { current } = state;
  $('#freeze').setAttribute('aria-pressed', String(Boolean(stillId)));
  $('#freeze').textContent = t(stillId ? 'session.unfreeze' : 'session.freeze');
  const shown = await showFrozenStill($('#frozen'), $('#remote-video'), stillId,
    () => fetch(`/api/sessions/${current.id}/stills/${stillId}`).then((r) => r.blob()));
  if (!stillId && current) current.frozenDigest = null;
  if (shown) current.frozenDigest = await digest(shown);
  redraw();
}
