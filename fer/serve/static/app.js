// fer-toolkit page: webcam frames -> WebSocket /v1/live -> boxes, labels, bars; a dropped photo -> POST /v1/predict.
// Plain JavaScript, no build step, nothing fetched from elsewhere.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const authHeaders = token ? { Authorization: "Bearer " + token } : {};
const COLOR = "#16a34a";
const MAX_IN_FLIGHT = 2;   // frames sent but not answered yet; the server drops the surplus anyway
const SEND_WIDTH = 640;    // frames are scaled to at most this width before JPEG encoding

const $ = (id) => document.getElementById(id);
const view = $("view"), video = $("video"), statusEl = $("status"), fpsEl = $("fps");
const grab = document.createElement("canvas");
let socket = null, stream = null, inFlight = 0, last = null, fps = 0, lastAnswerAt = 0, running = false;
window.fer = { answers: 0, last: null, photo: null, errors: [] };  // read by the browser test

function setStatus(text, kind) {
  statusEl.textContent = text;
  statusEl.className = "pill" + (kind ? " " + kind : "");
}

function showError(text) {
  window.fer.errors.push(text);
  $("message").textContent = text;
}

function wsUrl() {
  const url = new URL("v1/live", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  return url.href;
}

function probsSorted(face) {
  return Object.entries(face.probabilities).sort((a, b) => b[1] - a[1]);
}

function drawFaces(ctx, faces, scale) {
  const line = Math.max(2, Math.round(ctx.canvas.width / 320));
  ctx.lineWidth = line;
  for (const face of faces) {
    ctx.font = `${Math.max(13, Math.round(ctx.canvas.width / 40))}px system-ui, sans-serif`;
    const [x, y, w, h] = face.box.map((v) => v * scale);
    ctx.strokeStyle = COLOR;
    ctx.strokeRect(x, y, w, h);
    const top = probsSorted(face)[0];
    const text = (face.track_id !== undefined ? "#" + face.track_id + " " : "") + face.label + " " +
      Math.round(100 * top[1]) + "%";
    const tw = ctx.measureText(text).width + 8, th = parseInt(ctx.font, 10) + 6;
    const ty = y - th >= 0 ? y - th : y;
    ctx.fillStyle = COLOR;
    ctx.fillRect(x - line / 2, ty, tw, th);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x + 4, ty + th - 6);
    drawBars(ctx, face, x, y + h + line, Math.max(w, 120));
  }
}

// One row per class (name, bar) on a dark panel under the box, or above it when the box touches the bottom.
function drawBars(ctx, face, x, y, width) {
  const rows = probsSorted(face), size = Math.max(10, Math.round(ctx.canvas.width / 70)), rowH = size + 4;
  const panelH = rows.length * rowH + 6;
  if (y + panelH > ctx.canvas.height) y = Math.max(0, ctx.canvas.height - panelH);
  x = Math.min(x, ctx.canvas.width - width);
  ctx.fillStyle = "rgba(17,17,17,.72)";
  ctx.fillRect(x, y, width, panelH);
  ctx.font = `${size}px system-ui, sans-serif`;
  const labelW = Math.min(width * 0.45, ctx.measureText("surprise").width + 10);
  rows.forEach(([name, p], k) => {
    const ry = y + 3 + k * rowH;
    ctx.fillStyle = "#fff";
    ctx.fillText(name, x + 5, ry + size);
    ctx.fillStyle = "rgba(255,255,255,.18)";
    ctx.fillRect(x + labelW, ry + 3, width - labelW - 6, rowH - 6);
    ctx.fillStyle = k === 0 ? COLOR : "rgba(255,255,255,.8)";
    ctx.fillRect(x + labelW, ry + 3, (width - labelW - 6) * p, rowH - 6);
  });
}

function renderList(listEl, faces) {
  listEl.replaceChildren();
  if (!faces.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "no face";
    listEl.append(li);
    return;
  }
  faces.forEach((face, i) => {
    const li = document.createElement("li");
    li.className = "face";
    const title = document.createElement("h3");
    title.textContent = (face.track_id !== undefined ? "Face #" + face.track_id : "Face " + (i + 1)) + ": " + face.label;
    li.append(title);
    probsSorted(face).forEach(([name, p], k) => {
      const row = document.createElement("div");
      row.className = "row" + (k === 0 ? " top" : "");
      row.innerHTML = '<span></span><div class="track"><div class="fill"></div></div><span class="num"></span>';
      row.children[0].textContent = name;
      row.querySelector(".fill").style.width = (100 * p).toFixed(1) + "%";
      row.children[2].textContent = (100 * p).toFixed(0) + "%";
      li.append(row);
    });
    listEl.append(li);
  });
}

function loop() {
  if (!running) return;
  if (video.readyState >= 2) {
    if (view.width !== video.videoWidth) {
      view.width = video.videoWidth;
      view.height = video.videoHeight;
    }
    const ctx = view.getContext("2d");
    ctx.drawImage(video, 0, 0);
    if (last && last.faces) drawFaces(ctx, last.faces, view.width / last.width);
    if (socket && socket.readyState === WebSocket.OPEN && inFlight < MAX_IN_FLIGHT) sendFrame();
  }
  requestAnimationFrame(loop);
}

function sendFrame() {
  const scale = Math.min(1, SEND_WIDTH / video.videoWidth);
  grab.width = Math.round(video.videoWidth * scale);
  grab.height = Math.round(video.videoHeight * scale);
  grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
  inFlight++;
  grab.toBlob((blob) => {
    if (blob && socket && socket.readyState === WebSocket.OPEN) socket.send(blob);
    else inFlight--;
  }, "image/jpeg", 0.8);
}

function onAnswer(event) {
  const answer = JSON.parse(event.data);
  if (answer.frame === undefined) {  // an answer to a control message
    if (answer.error) showError(answer.error);
    return;
  }
  inFlight = Math.max(0, inFlight - 1);
  if (answer.error) {
    showError(answer.error);
    return;
  }
  const now = performance.now();
  if (lastAnswerAt) fps = fps ? 0.9 * fps + 0.1 * (1000 / (now - lastAnswerAt)) : 1000 / (now - lastAnswerAt);
  lastAnswerAt = now;
  fpsEl.textContent = fps.toFixed(1) + " fps";
  last = answer;
  window.fer.answers++;
  window.fer.last = answer;
  renderList($("faces"), answer.faces);
}

async function start() {
  $("start").disabled = true;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    showError("camera: " + error.message);
    setStatus("no camera", "bad");
    $("start").disabled = false;
    return;
  }
  video.srcObject = stream;
  await video.play();
  socket = new WebSocket(wsUrl());
  socket.binaryType = "arraybuffer";
  socket.onopen = () => { setStatus("connected", "ok"); inFlight = 0; };
  socket.onmessage = onAnswer;
  socket.onclose = (event) => {
    setStatus(event.code === 1008 ? "refused: token" : "disconnected", "bad");
    if (running) stop();
  };
  socket.onerror = () => showError("the WebSocket failed; is the server running?");
  running = true;
  $("stop").disabled = false;
  requestAnimationFrame(loop);
}

function stop() {
  running = false;
  if (socket) socket.close();
  if (stream) stream.getTracks().forEach((track) => track.stop());
  socket = stream = null;
  $("start").disabled = false;
  $("stop").disabled = true;
  if (statusEl.textContent === "connected") setStatus("idle");
}

async function predictPhoto(file) {
  const drop = $("drop");
  drop.querySelector("span").textContent = "Classifying " + file.name + " ...";
  let answer;
  try {
    const response = await fetch("v1/predict", {
      method: "POST", body: file,
      headers: { ...authHeaders, "Content-Type": file.type || "application/octet-stream" },
    });
    answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
  } catch (error) {
    showError("photo: " + error.message);
    drop.querySelector("span").textContent = "Could not classify " + file.name + ": " + error.message;
    return;
  }
  const bitmap = await createImageBitmap(file);
  const canvas = $("photo");
  const scale = Math.min(1, 1280 / bitmap.width);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  drawFaces(ctx, answer.faces, scale);
  canvas.hidden = false;
  renderList($("photo-faces"), answer.faces);
  drop.querySelector("span").textContent = file.name + ": " + answer.faces.length + " face(s). Drop another photo.";
  window.fer.photo = answer;
}

function setupDrop() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((name) => drop.addEventListener(name, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) predictPhoto(file);
  });
  $("file").addEventListener("change", (event) => {
    if (event.target.files[0]) predictPhoto(event.target.files[0]);
  });
}

async function showModel() {
  try {
    const response = await fetch("v1/models", { headers: authHeaders });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    const model = body.models[0];
    $("model").textContent = model.name + " " + model.version;
  } catch (error) {
    showError("models: " + error.message);
  }
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
setupDrop();
showModel();
