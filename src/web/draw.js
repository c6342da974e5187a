// Annotations on the picture: shapes are kept in coordinates normalised to the video
// frame, so they land on the same spot of the picture whatever size each side shows it.

// Where the picture actually is inside a <video> or <img> shown with object-fit: contain.
export function contentRect(media) {
  const w = media.clientWidth;
  const h = media.clientHeight;
  const iw = media.videoWidth ?? media.naturalWidth;
  const ih = media.videoHeight ?? media.naturalHeight;
  if (!iw || !ih || !w || !h) return { x: 0, y: 0, w, h };
  const scale = Math.min(w / iw, h / ih);
  return { x: (w - iw * scale) / 2, y: (h - ih * scale) / 2, w: iw * scale, h: ih * scale };
}

// The normalised position of a pointer event on the picture, or null outside it.
export function normalised(event, canvas, media) {
  const box = canvas.getBoundingClientRect();
  const rect = contentRect(media);
  const x = (event.clientX - box.left - rect.x) / rect.w;
  const y = (event.clientY - box.top - rect.y) / rect.h;
  if (!(x >= 0 && x <= 1 && y >= 0 && y <= 1)) return null;
  return [x, y];
}

// Draws the shapes (and the laser pointer) over `media`, on `canvas` laid on top of it.
export function render(canvas, media, shapes, pointer = null) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const rect = contentRect(media);
  const at = ([x, y]) => [rect.x + x * rect.w, rect.y + y * rect.h];
  ctx.lineWidth = Math.max(2, rect.w / 200);
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  for (const shape of shapes) drawShape(ctx, shape, at, rect);
  if (pointer) {
    const [x, y] = at(pointer);
    ctx.fillStyle = 'rgba(255, 0, 0, 0.85)';
    ctx.shadowColor = 'red';
    ctx.shadowBlur = 12;
    ctx.beginPath();
    ctx.arc(x, y, Math.max(6, rect.w / 80), 0, Math.PI * 2);
    ctx.fill();
    ctx.shadowBlur = 0;
  }
}

function drawShape(ctx, shape, at, rect) {
  ctx.strokeStyle = shape.color;
  ctx.fillStyle = shape.color;
  ctx.beginPath();
  if (shape.kind === 'pen') {
    shape.points.forEach((p, i) => (i ? ctx.lineTo(...at(p)) : ctx.moveTo(...at(p))));
    ctx.stroke();
  } else if (shape.kind === 'arrow') {
    const [x1, y1] = at(shape.from);
    const [x2, y2] = at(shape.to);
    ctx.moveTo(x1, y1);
    ctx.lineTo(x2, y2);
    ctx.stroke();
    const angle = Math.atan2(y2 - y1, x2 - x1);
    const head = Math.max(10, rect.w / 40);
    ctx.beginPath();
    ctx.moveTo(x2, y2);
    ctx.lineTo(x2 - head * Math.cos(angle - 0.45), y2 - head * Math.sin(angle - 0.45));
    ctx.lineTo(x2 - head * Math.cos(angle + 0.45), y2 - head * Math.sin(angle + 0.45));
    ctx.closePath();
    ctx.fill();
  } else if (shape.kind === 'circle') {
    const [x1, y1] = at(shape.from);
    const [x2, y2] = at(shape.to);
    ctx.ellipse((x1 + x2) / 2, (y1 + y2) / 2, Math.abs(x2 - x1) / 2, Math.abs(y2 - y1) / 2, 0, 0, Math.PI * 2);
    ctx.stroke();
  } else if (shape.kind === 'text') {
    const [x, y] = at(shape.at);
    ctx.font = `600 ${Math.max(14, rect.w / 30)}px system-ui, sans-serif`;
    ctx.lineWidth = 4;
    ctx.strokeStyle = 'rgba(0, 0, 0, 0.6)';
    ctx.strokeText(shape.text, x, y);
    ctx.fillText(shape.text, x, y);
  }
}

// Shows the still a picture is frozen on: `img` in place of the live `media`, or the live
// picture again when `stillId` is null. `load` gives the still's bytes when `img` does not
// show it yet; returns them then (null otherwise), so the caller can note what it shows.
export async function showFrozenStill(img, media, stillId, load) {
  if (!stillId) {
    img.hidden = true;
    media.hidden = false;
    return null;
  }
  let blob = null;
  if (img.dataset.still !== stillId) {
    img.dataset.still = stillId;
    blob = await load();
    if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
    await img.decode().catch(() => {});
  }
  img.hidden = false;
  media.hidden = true;
  return blob;
}
