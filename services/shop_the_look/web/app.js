// Shop the look: a page that speaks GraphQL to the meshflow gateway serving it.
// The token comes from the URL fragment (#token=..., never sent to a server) or the token box.
"use strict";

// The typed search: LookQueryInput, Look and Product are the app's typed documents
// (services/shop_the_look/executors.py); `meshflow graphql schema flow.yml` prints them.
const SEARCH = `query Search($docs: [LookQueryInput!], $limit: Int, $category: String) {
  search(docs: $docs, limit: $limit, category: $category) {
    matches { id title category imageUrl score imageScore textScore }
  }
}`;
const MAX_SIDE = 384; // photos are scaled down in the browser before they are sent

const $ = (id) => document.getElementById(id);
let photo = null; // base64 JPEG of the chosen photo

function takeToken() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem("token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = sessionStorage.getItem("token");
  if (!token) $("token-box").hidden = false;
  return token;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function shrink(file) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      const scale = Math.min(1, MAX_SIDE / Math.max(img.width, img.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.round(img.width * scale);
      canvas.height = Math.round(img.height * scale);
      canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
      URL.revokeObjectURL(url);
      resolve(canvas.toDataURL("image/jpeg", 0.9));
    };
    img.onerror = () => reject(new Error("this file is not an image the browser can read"));
    img.src = url;
  });
}

$("image").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    const dataUrl = await shrink(file);
    photo = dataUrl.split(",")[1];
    $("preview").src = dataUrl;
    $("preview").hidden = false;
    $("clear-image").hidden = false;
    $("image-label").textContent = file.name;
  } catch (err) {
    status(err.message, true);
  }
});

$("clear-image").addEventListener("click", () => {
  photo = null;
  $("image").value = "";
  $("preview").hidden = true;
  $("clear-image").hidden = true;
  $("image-label").textContent = "Add a photo";
});

function fmt(value) {
  return typeof value === "number" ? value.toFixed(3) : "";
}

function show(matches) {
  const list = $("results");
  list.replaceChildren();
  for (const match of matches) {
    const item = document.createElement("li");
    item.dataset.id = match.id;
    item.dataset.category = match.category || "";
    const img = document.createElement("img");
    img.src = match.imageUrl || "";
    img.alt = match.title || match.id;
    img.loading = "lazy";
    const meta = document.createElement("div");
    meta.className = "meta";
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = match.title || match.id;
    const detail = document.createElement("div");
    detail.className = "scores";
    const parts = [`score ${fmt(match.score)}`];
    if (match.imageScore !== null) parts.push(`image ${fmt(match.imageScore)}`);
    if (match.textScore !== null) parts.push(`text ${fmt(match.textScore)}`);
    detail.textContent = parts.join(" · ");
    meta.append(name, detail);
    item.append(img, meta);
    list.append(item);
  }
}

$("search").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim() || takeToken();
  const text = $("text").value.trim();
  if (!text && !photo) {
    status("Type some words or add a photo.", true);
    return;
  }
  if (!token) {
    status("A token is needed: paste one above, or open the link the demo printed.", true);
    return;
  }
  const doc = {};
  if (text) doc.text = text;
  if (photo) doc.image = photo;
  const category = $("category").value.trim() || null;
  status("Searching...");
  const started = performance.now();
  try {
    const answer = await fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: SEARCH, variables: { docs: [doc], limit: 12, category } }),
    });
    const body = await answer.json();
    if (body.errors && body.errors.length) {
      const error = body.errors[0];
      const code = (error.extensions && error.extensions.code) || answer.status;
      status(`${code}: ${error.message}`, true);
      return;
    }
    const matches = body.data.search[0].matches;
    show(matches);
    const ms = Math.round(performance.now() - started);
    status(`${matches.length} results in ${ms} ms`);
  } catch (err) {
    status(`The gateway did not answer: ${err.message}`, true);
  }
});

takeToken();
