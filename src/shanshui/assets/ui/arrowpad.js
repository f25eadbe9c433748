// Arrow pad of the Painting -> video tab (gradio gr.HTML js_on_load; `element`, `props`, `trigger`,
// `watch` are provided by gradio). props.value is JSON:
//   {"image": <data URL of a preview>, "width": W, "height": H, "arrows": [[x0, y0, x1, y1], ...]}
// with coordinates in the ORIGINAL painting's pixels. Dragging adds an arrow and fires 'input';
// the page's Python code keeps the per-arrow strengths in the arrows text box.
const pad = { img: null, src: null, drag: null };

function readState() {
  try {
    const st = JSON.parse(props.value || "{}");
    st.arrows = Array.isArray(st.arrows) ? st.arrows : [];
    return st;
  } catch (e) {
    return { arrows: [] };
  }
}

function canvasEl() { return element.querySelector("canvas"); }

function withImage(st, then) {
  if (!st.image) { pad.img = null; pad.src = null; then(); return; }
  if (pad.img && pad.src === st.image) { then(); return; }
  const im = new Image();
  im.onload = () => { pad.img = im; pad.src = st.image; then(); };
  im.src = st.image;
}

function drawArrow(ctx, a, k, colour, label) {
  const [x0, y0, x1, y1] = [a[0] * k, a[1] * k, a[2] * k, a[3] * k];
  const ang = Math.atan2(y1 - y0, x1 - x0), head = 10;
  for (const [c, w] of [["rgba(255,255,255,0.9)", 5], [colour, 2.5]]) {
    ctx.strokeStyle = c; ctx.lineWidth = w; ctx.lineCap = "round";
    ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1);
    ctx.moveTo(x1, y1); ctx.lineTo(x1 - head * Math.cos(ang - 0.45), y1 - head * Math.sin(ang - 0.45));
    ctx.moveTo(x1, y1); ctx.lineTo(x1 - head * Math.cos(ang + 0.45), y1 - head * Math.sin(ang + 0.45));
    ctx.stroke();
  }
  ctx.fillStyle = colour; ctx.beginPath(); ctx.arc(x0, y0, 4, 0, 2 * Math.PI); ctx.fill();
  if (label !== null) {
    ctx.font = "bold 13px sans-serif"; ctx.lineWidth = 3; ctx.strokeStyle = "white";
    ctx.strokeText(label, x0 + 6, y0 - 6); ctx.fillText(label, x0 + 6, y0 - 6);
  }
}

function redraw() {
  const st = readState();
  withImage(st, () => {
    const c = canvasEl();
    if (!c) return;
    const hint = element.querySelector(".arrowpad-hint");
    if (!pad.img || !st.width || !st.height) {
      c.width = 0; c.height = 0;
      if (hint) hint.textContent = "Upload a painting above, then drag arrows on it here.";
      return;
    }
    const box = Math.max(200, Math.min(640, (element.clientWidth || 640) - 4));
    const k = Math.min(box / st.width, box / st.height);
    c.width = Math.round(st.width * k); c.height = Math.round(st.height * k);
    const ctx = c.getContext("2d");
    ctx.drawImage(pad.img, 0, 0, c.width, c.height);
    st.arrows.forEach((a, i) => drawArrow(ctx, a, k, "#d1342f", String(i)));
    if (pad.drag) drawArrow(ctx, pad.drag, k, "#f2a900", null);
    if (hint) hint.textContent = st.arrows.length + " arrow(s). Drag from where the content is to where it should move.";
  });
}

function toImage(ev) {
  const c = canvasEl(), st = readState();
  const r = c.getBoundingClientRect();
  const x = Math.min(Math.max(ev.clientX - r.left, 0), r.width - 1) * st.width / r.width;
  const y = Math.min(Math.max(ev.clientY - r.top, 0), r.height - 1) * st.height / r.height;
  return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
}

element.addEventListener("pointerdown", (ev) => {
  if (ev.target.tagName !== "CANVAS" || !pad.img) return;
  ev.preventDefault();
  ev.target.setPointerCapture(ev.pointerId);
  const [x, y] = toImage(ev);
  pad.drag = [x, y, x, y];
});
element.addEventListener("pointermove", (ev) => {
  if (!pad.drag) return;
  const [x, y] = toImage(ev);
  pad.drag[2] = x; pad.drag[3] = y;
  redraw();
});
element.addEventListener("pointerup", (ev) => {
  if (!pad.drag) return;
  const [x, y] = toImage(ev);
  const a = [pad.drag[0], pad.drag[1], x, y];
  pad.drag = null;
  const st = readState();
  if (Math.hypot(a[2] - a[0], a[3] - a[1]) >= 2) {
    st.arrows.push(a);
    props.value = JSON.stringify(st);
    trigger("input");
  }
  setTimeout(redraw, 0);
});
window.addEventListener("resize", () => setTimeout(redraw, 0));
watch("value", () => setTimeout(redraw, 0));
setTimeout(redraw, 0);
