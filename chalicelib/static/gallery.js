// imageshelf gallery: uploads, live updates, paging, lightbox and deletion. Vanilla JS, no build step.
//
// Safety rule for this file: every piece of data (filenames, messages, URLs) reaches the page through
// textContent or setAttribute, never through innerHTML, so a filename is always shown as text.
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("config").textContent);
  const $ = (id) => document.getElementById(id);
  const grid = $("grid");
  const lightbox = $("lightbox");
  const TOKEN_KEY = "imageshelf.adminToken";
  const UPLOAD_TOKEN_KEY = "imageshelf.uploadToken";
  const MINE_KEY = "imageshelf.myUploads"; // ids this browser uploaded, newest last
  const MINE_LIMIT = 500;
  const PARALLEL_UPLOADS = 3;
  const REFRESH_MS = 5000;
  // Types a browser can preview from a local blob while the bytes upload (from the format registry).
  const PREVIEWABLE = new Set(config.previewTypes);

  // id -> {image, card, pinned}. "pinned" entries are this tab's uploads still being processed:
  // the listing may not show them yet, so the periodic refresh must not treat them as deleted.
  const entries = new Map();
  let nextCursor = config.firstPage.next_cursor;
  let adminToken = null;
  // Every failed image met, shown or not: the public grid hides other people's failures (see
  // failureShown), and an admin who sets the token sees them all at once.
  const failures = new Map();

  // --- small helpers ----------------------------------------------------------------------

  // What focus may land on in a card: its link or a shown button.
  const FOCUSABLE = "a, button:not([hidden])";

  function words(code, detail) {
    const text = config.errors[code] || config.errors.internal_error;
    // invalid_request is generic on its own: the API's message says what was wrong.
    return code === "invalid_request" && detail ? `${text} ${detail}` : text;
  }

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message || code);
      this.code = code;
      this.status = status || 0;
    }
  }

  // Relative URLs, so the page also works below a path prefix such as API Gateway's stage.
  async function api(path, options) {
    let response;
    try {
      response = await fetch(path, Object.assign({ headers: { Accept: "application/json" } }, options));
    } catch (_) {
      throw new ApiError("network", "", 0);
    }
    if (response.status === 204) return null;
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON: handled below */ }
    if (!response.ok) {
      const error = (body && body.error) || {};
      throw new ApiError(error.code || (response.status >= 500 ? "internal_error" : "invalid_request"),
        error.message || "", response.status);
    }
    return body;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function announce(text) {
    const announcer = $("announcer");
    announcer.textContent = "";
    // A fresh text node in a later frame makes screen readers read repeated messages too.
    requestAnimationFrame(() => { announcer.textContent = text; });
  }

  let toastTimer = 0;
  function toast(text) {
    const node = $("toast");
    node.textContent = text;
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { node.hidden = true; }, 6000);
  }

  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  // --- whose failures ---------------------------------------------------------------------

  // A failure matters to whoever uploaded the file and to the admin, not to every visitor: this
  // browser keeps the ids of its own uploads (the latest MINE_LIMIT) in localStorage, and shows a
  // failed image only when it is one of them or while the tab holds the admin token. Dismissing
  // a failure forgets its id, so it stays hidden after a reload too.

  // The ids in storage (the truth, shared by this browser's tabs), or null if storage is unusable.
  function readMine() {
    try {
      const ids = JSON.parse(localStorage.getItem(MINE_KEY) || "[]");
      return new Set(Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : []);
    } catch (_) {
      return null;
    }
  }

  let mine = readMine() || new Set();

  // Read again before each change, so two tabs of this browser do not undo each other's changes.
  function changeMine(change) {
    const ids = readMine() || new Set(mine);
    change(ids);
    mine = new Set(Array.from(ids).slice(-MINE_LIMIT));
    try {
      localStorage.setItem(MINE_KEY, JSON.stringify(Array.from(mine)));
    } catch (_) { /* storage full or disabled: this tab still knows */ }
  }

  function rememberUpload(id) {
    changeMine((ids) => { ids.delete(id); ids.add(id); });
  }

  function failureShown(id) {
    return Boolean(adminToken) || mine.has(id);
  }

  // Show or hide the failures met so far, after the token or this browser's uploads changed.
  function applyFailures() {
    for (const [id, image] of failures) {
      if (failureShown(id)) {
        if (!entries.has(id)) upsert(image);
      } else if (entries.has(id) && !entries.get(id).pinned) {
        removeImage(id);
      }
    }
  }

  function dismissFailure(id) {
    const entry = entries.get(id);
    const name = entry && entry.image ? filenameOf(entry.image) : "The photo";
    changeMine((ids) => ids.delete(id));
    removeImage(id);
    announce(`${name} was dismissed.`);
  }

  // --- cards ------------------------------------------------------------------------------

  function filenameOf(image) {
    return (image.original && image.original.filename) || "Untitled";
  }

  function renditionsOf(image) {
    return (image.renditions || []).slice().sort((a, b) => a.width * a.height - b.width * b.height);
  }

  // A card's status as drawn: "ready" without renditions has nothing to show.
  function statusOf(image) {
    return image.status === "ready" && !(image.renditions || []).length ? "failed" : image.status;
  }

  // Everything a card shows; a card is refilled only when this changes. Rendition URLs are part of it:
  // storage hands out the same presigned URL while at least half its life is left, so they change only
  // when renewed, and then the card should take the new ones before the old ones expire.
  function signature(image) {
    const sizes = renditionsOf(image)
      .map((r) => `${r.name}:${r.width}x${r.height}:${r.url}:${(r.formats || []).map((f) => f.url).join(" ")}`)
      .join(",");
    return [image.status, image.error && image.error.code, filenameOf(image), sizes].join("|");
  }

  // Every tile is a clone of <template id="card-template">: templates/card.html is the one markup of
  // a tile, and the server fills the same macro for the first page. The template holds a section per
  // state (data-tile); a card keeps the one of its status, as the server-rendered ones do. Cloned from
  // the template's inert document, images start loading only once the card is in the page, filled.
  const cardTemplate = $("card-template").content.querySelector(".card");
  const UPLOAD_STATUSES = new Set(["uploading", "processing", "refused"]); // this tab's uploads

  function cloneCard(status) {
    const card = cardTemplate.cloneNode(true);
    const tile = UPLOAD_STATUSES.has(status) ? "upload" : status;
    for (const section of card.querySelectorAll("[data-tile]")) {
      if (section.dataset.tile !== tile) section.remove();
    }
    card.querySelector(".delete-button").remove(); // decorate() adds one while the tab holds the token
    card.dataset.status = status;
    card.classList.add("is-new");
    return card;
  }

  function setName(card, name) {
    const node = card.querySelector(".name");
    node.textContent = name;
    node.setAttribute("title", name);
    const button = card.querySelector(".delete-button");
    if (button) button.setAttribute("aria-label", `Delete ${name}`);
    const dismiss = card.querySelector('[data-action="dismiss-failed"]');
    if (dismiss) dismiss.setAttribute("aria-label", `Dismiss ${name}`);
  }

  // Fill a card of the image's status with the image's values: text and attributes only.
  function fill(card, image) {
    const name = filenameOf(image);
    card.dataset.id = image.id;
    setName(card, name);
    let info = "Processing";
    if (card.dataset.status === "ready") {
      const renditions = renditionsOf(image);
      const thumb = renditions[0];
      const link = card.querySelector("a.tile");
      link.setAttribute("href", renditions[renditions.length - 1].url);
      link.setAttribute("title", name);
      const img = card.querySelector("a.tile img");
      img.setAttribute("srcset", srcsetOf(renditions, ""));
      const sources = link.querySelectorAll("source");
      const types = Array.from(sources, (source) => source.getAttribute("type"));
      sourceTypes(renditions, types).forEach((type, index) => {
        sources[index].setAttribute("type", type);
        sources[index].setAttribute("srcset", srcsetOf(renditions, type));
      });
      img.setAttribute("src", thumb.url);
      img.setAttribute("width", thumb.width);
      img.setAttribute("height", thumb.height);
      // Before the card is laid out, so the browser does not pick a rendition for a 100vw-wide photo.
      if (!img.getAttribute("sizes")) setSizes(card, expectedWidth(thumb.width / thumb.height));
      img.setAttribute("alt", name);
      const placeholder = image.placeholder || {};
      link.setAttribute("data-color", placeholder.color || "");
      link.setAttribute("data-placeholder", placeholder.preview || "");
      paintPlaceholder(link);
      const original = image.original || {};
      info = original.width && original.height ? `${original.width} × ${original.height}` : "";
    } else if (card.dataset.status === "failed") {
      card.querySelector(".tile-reason").textContent = words((image.error && image.error.code) || "internal_error");
      info = "Failed";
    }
    card.querySelector(".info").textContent = info;
  }

  // The placeholder behind a thumbnail until it loads: the mean colour and the few-pixel preview,
  // blurred by the stylesheet (a.tile::before). Set through CSSOM: the CSP allows no style attribute.
  const watchedThumbs = new WeakSet();
  function paintPlaceholder(link) {
    const color = link.getAttribute("data-color") || "";
    const preview = link.getAttribute("data-placeholder") || "";
    const ok = /^#[0-9a-f]{6}$/.test(color) && /^data:image\/png;base64,[A-Za-z0-9+/=]+$/.test(preview);
    if (ok) {
      link.style.setProperty("--ph-color", color);
      link.style.setProperty("--ph-image", `url("${preview}")`);
    } else {
      link.style.removeProperty("--ph-color");
      link.style.removeProperty("--ph-image");
    }
    const img = link.querySelector("img");
    if (!img || watchedThumbs.has(img)) return;
    watchedThumbs.add(img);
    const loaded = () => link.classList.toggle("is-loaded", img.complete && img.naturalWidth > 0);
    img.addEventListener("load", loaded);
    loaded();
  }

  // The <source> types of a tile (AVIF and WebP, as the card template has them), the smaller for
  // this image first, as gallery.source_types orders them: a browser takes the first <source>
  // type it can show. On the thumbnail, then on all sizes.
  function sourceTypes(renditions, types) {
    const size = (r, type) => {
      const found = (r.formats || []).find((f) => f.content_type === type);
      return found ? found.bytes : r.bytes || 0;
    };
    const key = (type) => [size(renditions[0], type), renditions.reduce((sum, r) => sum + size(r, type), 0)];
    return types.slice().sort((a, b) => {
      const [ka, kb] = [key(a), key(b)];
      return ka[0] - kb[0] || ka[1] - kb[1];
    });
  }

  // A <source type=...>'s srcset: each size in that type where it is stored in it, else in its
  // JPEG/PNG (as gallery.srcset does for the server's tiles); "" gives the <img>'s own.
  function srcsetOf(renditions, type) {
    return renditions.map((r) => {
      const found = type && (r.formats || []).find((f) => f.content_type === type);
      return `${found ? found.url : r.url} ${r.width}w`;
    }).join(", ");
  }

  // A card for an image that arrives after the page loaded.
  function buildCard(image) {
    const card = cloneCard(statusOf(image));
    fill(card, image);
    decorate(card);
    return card;
  }

  // Put a card where its id sorts: ids sort newest first as strings, as the API lists them.
  // Cards of uploads that have no id yet stay at the top.
  function place(card, id) {
    for (const other of grid.children) {
      if (other !== card && other.dataset.id && other.dataset.id > id) {
        grid.insertBefore(card, other);
        return;
      }
    }
    grid.append(card);
  }

  function replaceCard(old, card) {
    const hadFocus = old.contains(document.activeElement);
    old.replaceWith(card);
    if (hadFocus) (card.querySelector(FOCUSABLE) || grid).focus();
  }

  // Add or update one image from any API answer. A failure this browser does not show (see
  // failureShown) is only noted, and its card goes if it had one.
  function upsert(image) {
    const entry = entries.get(image.id);
    if (entry && entry.localName && !(image.original && image.original.filename)) {
      // GET /images/{id} knows no filename until processing starts: keep the one we uploaded.
      image = Object.assign({}, image, { original: Object.assign({}, image.original, { filename: entry.localName }) });
    }
    if (statusOf(image) === "failed") {
      failures.set(image.id, image);
      if (!failureShown(image.id)) {
        removeImage(image.id);
        return;
      }
    } else {
      failures.delete(image.id);
    }
    if (entry && entry.pinned && image.status === "pending") {
      entry.image = image; // keep this tab's upload card, with its local preview, until the image settles
      return;
    }
    if (!entry) {
      const card = buildCard(image);
      entries.set(image.id, { image, card, pinned: false, sig: signature(image), touched: Date.now() });
      place(card, image.id);
    } else if (entry.card.dataset.status !== statusOf(image)) {
      const card = buildCard(image);
      replaceCard(entry.card, card);
      if (entry.preview) URL.revokeObjectURL(entry.preview);
      Object.assign(entry, { image, card, sig: signature(image), preview: null });
    } else if (entry.sig !== signature(image)) {
      // Same state, new values (a renewed URL, a name): refill in place, so nothing flickers.
      fill(entry.card, image);
      Object.assign(entry, { image, sig: signature(image) });
    } else {
      entry.image = image;
    }
    if (image.status === "pending") watch(image.id, 1000);
    updateEmpty();
  }

  function removeImage(id) {
    const entry = entries.get(id);
    if (!entry) return;
    entries.delete(id);
    if (entry.card.contains(document.activeElement)) {
      const next = entry.card.nextElementSibling || entry.card.previousElementSibling;
      ((next && next.querySelector(FOCUSABLE)) || grid).focus();
    }
    entry.card.remove();
    if (lightbox.open && current === id) closeLightbox();
    updateEmpty();
  }

  // "No photos yet" only when there is nothing to show and nothing more to load.
  function updateEmpty() {
    $("empty").hidden = grid.children.length > 0 || Boolean(nextCursor);
  }

  // --- layout: justified rows or the square grid -------------------------------------------

  // Justified rows (the default), as Flickr and Google Photos show photos: each photo whole, in a
  // box of its own aspect ratio; each row exactly as wide as the grid, its photos all one height,
  // close to a target height that gallery.css sets per screen size (--row-h). This script picks the
  // rows; flexbox places the pixels, from three custom properties per card (see gallery.css). The
  // square grid is all CSS. The visitor's choice is kept in localStorage.
  //
  // Rows are filled greedily, as Flickr's justified-layout does: photos join a row while it is
  // taller than the target; the photo that would make it shorter joins it or starts the next one,
  // whichever leaves the row nearer the target. Adding photos at the end (more pages) therefore
  // never moves the rows above them. The layout is recomputed, at most once a frame, when cards
  // come, go or change state, and at once when the grid's width changes (before the frame is
  // painted); a card's style is written only when its values changed, so a refresh that changes
  // nothing writes nothing.
  const LAYOUT_KEY = "imageshelf.layout";
  const LAYOUTS = new Set(Array.from(document.querySelectorAll('input[name="layout"]'), (input) => input.value));
  const BASIS_SHARE = 0.995; // of the row's width given as flex-basis; flex-grow hands out the rest
  const NEARLY_FULL = 1.1; // a last row this close to the target height is justified too
  const previewAspects = new WeakMap(); // upload card -> its local preview's aspect ratio
  const applied = new WeakMap(); // card -> the custom properties last written on it
  const DEFAULT_LAYOUT = LAYOUTS.has(grid.dataset.layout) ? grid.dataset.layout : "justified"; // the server's
  let layoutMode = DEFAULT_LAYOUT;
  let gridWidth = 0;
  let rowTarget = 200;
  let squareWidth = 0; // a square tile's width, as last laid out
  let layoutFrame = 0;

  function storedLayout() {
    try {
      const mode = localStorage.getItem(LAYOUT_KEY);
      return LAYOUTS.has(mode) ? mode : null;
    } catch (_) {
      return null; // storage disabled: the default
    }
  }

  function setLayout(mode, remember) {
    if (!LAYOUTS.has(mode)) return;
    layoutMode = mode;
    grid.dataset.layout = mode;
    for (const input of document.querySelectorAll('input[name="layout"]')) input.checked = input.value === mode;
    if (remember) {
      try { localStorage.setItem(LAYOUT_KEY, mode); } catch (_) { /* this page still switches */ }
    }
    layout();
  }

  function scheduleLayout() {
    if (!layoutFrame) layoutFrame = requestAnimationFrame(layout);
  }

  // The width a photo of this aspect ratio gets, as far as is known before it is laid out.
  function expectedWidth(aspect) {
    if (layoutMode === "grid") return squareWidth || 260;
    return Math.min(aspect * rowTarget, gridWidth || Infinity);
  }

  // A card's aspect ratio in the rows. A photo's is its thumbnail's (the <img>'s width and height
  // attributes, the server's and the script's tiles alike). Cards without a photo yet: an upload
  // shows its local preview, at that preview's shape (square at the narrowest, so its progress bar
  // and words fit, and at most 2:1); a failure or refusal has words and buttons to show, so it is
  // at least 320 pixels wide where the screen allows; a pending image of unknown size is square.
  function aspectOf(card, wordy) {
    const status = card.dataset.status;
    if (status === "ready") {
      const img = card.querySelector("a.tile img");
      const width = Number(img && img.getAttribute("width"));
      const height = Number(img && img.getAttribute("height"));
      return width > 0 && height > 0 ? width / height : 1;
    }
    if (status === "failed" || status === "refused") return wordy;
    const preview = previewAspects.get(card);
    return preview ? Math.min(2, Math.max(1, preview)) : 1;
  }

  // Rows for these aspect ratios: [{start, end, height, full}], `end` excluded. A full row's
  // photos at `height` fill `width` exactly, gaps included; a last row that is not full keeps the
  // target height.
  function justify(aspects, width, gap, target) {
    const rows = [];
    const heightOf = (count, sum) => (width - gap * (count - 1)) / sum;
    let start = 0;
    let sum = 0;
    for (let i = 0; i < aspects.length; i += 1) {
      const count = i - start + 1;
      const withIt = heightOf(count, sum + aspects[i]);
      if (withIt >= target) {
        sum += aspects[i]; // the row is still taller than the target: room for more
        continue;
      }
      const without = count > 1 ? heightOf(count - 1, sum) : Infinity;
      if (target / withIt <= without / target) {
        rows.push({ start, end: i + 1, height: withIt, full: true });
        start = i + 1;
        sum = 0;
      } else {
        rows.push({ start, end: i, height: without, full: true });
        start = i;
        sum = aspects[i];
        if (heightOf(1, sum) < target) { // wider than the grid at the target height: a row of its own
          rows.push({ start, end: i + 1, height: heightOf(1, sum), full: true });
          start = i + 1;
          sum = 0;
        }
      }
    }
    if (start < aspects.length) {
      const height = heightOf(aspects.length - start, sum);
      const full = height <= target * NEARLY_FULL;
      rows.push({ start, end: aspects.length, height: full ? height : target, full });
    }
    return rows;
  }

  // The width the browser should choose a rendition for: the tile's, as laid out.
  function setSizes(card, width) {
    if (card.dataset.status !== "ready") return;
    const sizes = `${Math.ceil(width)}px`;
    for (const node of card.querySelectorAll("a.tile source, a.tile img")) {
      if (node.getAttribute("sizes") !== sizes) node.setAttribute("sizes", sizes);
    }
  }

  function layout() {
    if (layoutFrame) cancelAnimationFrame(layoutFrame);
    layoutFrame = 0;
    const cards = Array.from(grid.children);
    if (!gridWidth) gridWidth = grid.clientWidth;
    if (!cards.length || !gridWidth) return;
    const style = getComputedStyle(grid);
    // (Read back in pixels where @property is supported; else the same formula as gallery.css.)
    rowTarget = parseFloat(style.getPropertyValue("--row-h"))
      || Math.max(110, Math.min(0.08 * innerWidth + 100, 280, 0.48 * innerHeight));
    if (layoutMode === "grid") {
      squareWidth = cards[0].getBoundingClientRect().width; // every column is as wide
      for (const card of cards) setSizes(card, squareWidth);
      return;
    }
    const gap = parseFloat(style.columnGap) || 0;
    const wordy = Math.max(1.5, Math.min(gridWidth, 320) / rowTarget);
    const aspects = cards.map((card) => aspectOf(card, wordy));
    for (const row of justify(aspects, gridWidth, gap, rowTarget)) {
      for (let i = row.start; i < row.end; i += 1) {
        const width = aspects[i] * row.height;
        const values = [aspects[i].toFixed(5), `${(width * (row.full ? BASIS_SHARE : 1)).toFixed(2)}px`,
          row.full ? aspects[i].toFixed(5) : "0"];
        const key = values.join(" ");
        if (applied.get(cards[i]) !== key) {
          applied.set(cards[i], key);
          cards[i].style.setProperty("--ar", values[0]);
          cards[i].style.setProperty("--basis", values[1]);
          cards[i].style.setProperty("--grow", values[2]);
        }
        setSizes(cards[i], width);
      }
    }
    if (!grid.classList.contains("is-laid-out")) grid.classList.add("is-laid-out");
  }

  function setupLayout() {
    const stored = storedLayout();
    if (stored) setLayout(stored, false);
    else layout();
    const switcher = $("layout-switch");
    switcher.hidden = false;
    switcher.addEventListener("change", (event) => {
      if (event.target.name === "layout") setLayout(event.target.value, true);
    });
    // Cards added, removed or replaced; a card's status; a thumbnail's size.
    new MutationObserver((records) => {
      if (records.some((r) => r.type === "attributes" || r.target === grid)) scheduleLayout();
    }).observe(grid, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-status", "width", "height"] });
    // The grid's width, watched on a block beside it whose height does not depend on the photos, so
    // laying them out again here (before the frame is painted) cannot loop.
    new ResizeObserver((items) => {
      const width = items[items.length - 1].contentRect.width;
      if (width && Math.abs(width - gridWidth) > 0.01) {
        gridWidth = width;
        layout();
      }
    }).observe($("load-more").parentElement);
    // The target height follows the window's size even where the grid's width is at its maximum.
    window.addEventListener("resize", scheduleLayout);
    // Another tab chose another layout.
    window.addEventListener("storage", (event) => {
      if (event.key === LAYOUT_KEY) setLayout(storedLayout() || DEFAULT_LAYOUT, false);
    });
  }

  // --- live updates -----------------------------------------------------------------------

  // Poll one pending image until it is ready or failed: every 250 ms at first, so a new upload's
  // thumbnail shows within about a second, then more slowly for images that take long.
  const watching = new Set();
  async function watch(id, firstDelay) {
    if (watching.has(id)) return;
    watching.add(id);
    const started = Date.now();
    let delay = firstDelay;
    try {
      while (entries.has(id)) {
        await sleep(delay);
        const age = Date.now() - started;
        delay = age < 20000 ? 250 : age < 120000 ? 1000 : 5000;
        let image;
        try {
          image = await api(`images/${encodeURIComponent(id)}`);
        } catch (error) {
          if (error.code === "not_found" && age > 30000) { removeImage(id); return; }
          continue; // not visible yet, or a network blip: try again
        }
        if (!entries.has(id)) return;
        const entry = entries.get(id);
        const wasPinned = entry.pinned;
        upsert(image);
        if (image.status !== "pending") {
          entry.pinned = false;
          entry.touched = Date.now();
          if (wasPinned) {
            announce(image.status === "ready" ? `${filenameOf(image)} is ready.`
              : `${filenameOf(image)} could not be processed: ${words(image.error && image.error.code)}`);
          }
          return;
        }
      }
    } finally {
      watching.delete(id);
    }
  }

  // Refresh the first page every few seconds, merging by id, so images uploaded elsewhere
  // (another tab, the CLI, `aws s3 cp`) appear, and ones deleted elsewhere go.
  async function refresh() {
    const startedAt = Date.now();
    let page;
    try {
      page = await api(`images?limit=${config.pageSize}`);
    } catch (error) {
      showBanner(words(error.code === "network" ? "network" : "internal_error"));
      return;
    }
    hideBanner();
    const seen = new Set(page.images.map((image) => image.id));
    for (const image of page.images) upsert(image);
    // The page covers every id from the newest down to its last one (or everything, when it is the
    // only page): a known image in that range that is missing from it was deleted.
    const last = page.images.length ? page.images[page.images.length - 1].id : null;
    for (const [id, entry] of entries) {
      // (Entries added or settled while the request was in flight may postdate the listing.)
      if (entry.pinned || seen.has(id) || entry.touched >= startedAt) continue;
      if (!page.next_cursor || (last && id <= last)) removeImage(id);
    }
    for (const id of Array.from(failures.keys())) {
      if (!seen.has(id) && !entries.has(id) && (!page.next_cursor || (last && id <= last))) failures.delete(id);
    }
  }

  function showBanner(text) {
    $("banner-text").textContent = text;
    $("banner").hidden = false;
  }
  function hideBanner() {
    $("banner").hidden = true;
  }

  // --- paging -----------------------------------------------------------------------------

  let loadingMore = false;
  async function loadMore() {
    if (loadingMore || !nextCursor) return;
    loadingMore = true;
    const button = $("load-more");
    const status = $("more-status");
    button.disabled = true;
    status.textContent = "Loading more photos…";
    try {
      // A page can be all hidden failures: then the next one is loaded too, so "Load more" never
      // adds nothing (a few pages at most per call; scrolling or the button carries on).
      const before = grid.children.length;
      for (let hops = 0; nextCursor && grid.children.length === before && hops < 5; hops += 1) {
        const page = await api(`images?limit=${config.pageSize}&cursor=${encodeURIComponent(nextCursor)}`);
        for (const image of page.images) upsert(image);
        nextCursor = page.next_cursor;
      }
      updateEmpty();
      status.textContent = nextCursor ? "" : `That's everything: ${plural(entries.size, "photo", "photos")}.`;
      button.textContent = "Load more";
    } catch (error) {
      status.textContent = words(error.code === "network" ? "network" : "internal_error");
      button.textContent = "Retry";
      moreFailed = true;
    } finally {
      loadingMore = false;
      button.disabled = false;
      button.hidden = !nextCursor;
    }
    // Still near the bottom (a tall screen)? Observing again fires the callback once more.
    if (!moreFailed) { observer.unobserve($("load-more").parentElement); observer.observe($("load-more").parentElement); }
  }

  // Infinite scroll, until a load fails; then the visitor retries with the button.
  let moreFailed = false;
  const observer = new IntersectionObserver((items) => {
    if (items.some((item) => item.isIntersecting) && !moreFailed) loadMore();
  }, { rootMargin: "600px 0px" });

  // --- uploads ----------------------------------------------------------------------------

  const queue = [];
  let active = 0;

  function refusal(file) {
    // A type the browser cannot name (a JPEG without an extension) goes through: the server
    // judges the bytes, as it does for every upload.
    const unnamed = file.type === "" || file.type === "application/octet-stream";
    if (!unnamed && !config.contentTypes.includes(file.type)) return "unsupported_media_type";
    if (file.size === 0) return "empty_file";
    if (file.size > config.maxUploadBytes) return "file_too_large";
    return null;
  }

  function addFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    announce(`Uploading ${plural(files.length, "file", "files")}.`);
    // Prepend in reverse so the cards read in the order the files were chosen; the queue, and so
    // the grants (see requestGrant), take the last chosen first.
    uploadTokenDeclined = false; // a new choice of files may ask for the upload token again
    for (const file of files.slice().reverse()) {
      const upload = { file, card: null, progress: null };
      upload.card = uploadCard(upload);
      grid.prepend(upload.card);
      const code = refusal(file);
      if (code) {
        refuse(upload, code);
      } else {
        queue.push(upload);
      }
    }
    files.forEach(() => pump());
    updateEmpty();
    window.scrollTo({ top: 0, behavior: "smooth" });
  }

  function uploadCard(upload) {
    const { file } = upload;
    const card = cloneCard("uploading");
    setName(card, file.name);
    const preview = card.querySelector(".preview");
    if (PREVIEWABLE.has(file.type) && file.size <= config.maxUploadBytes) {
      upload.preview = URL.createObjectURL(file);
      preview.setAttribute("src", upload.preview);
      preview.addEventListener("error", () => preview.remove()); // not decodable here (or not an image)
      preview.addEventListener("load", () => {
        if (preview.naturalWidth && preview.naturalHeight) {
          previewAspects.set(card, preview.naturalWidth / preview.naturalHeight);
          scheduleLayout();
        }
      });
    } else {
      preview.remove();
    }
    upload.state = card.querySelector(".tile-state");
    upload.progress = card.querySelector("progress");
    upload.progress.setAttribute("aria-label", `Upload of ${file.name}`);
    upload.reason = card.querySelector(".tile-reason");
    upload.info = card.querySelector(".info");
    upload.info.textContent = "Queued";
    upload.retry = card.querySelector('[data-action="retry"]');
    upload.dismiss = card.querySelector('[data-action="dismiss"]');
    upload.dismiss.setAttribute("aria-label", `Dismiss ${file.name}`);
    upload.retry.addEventListener("click", () => {
      // A retry is a new upload with a new, newest id: its card goes where that id sorts, the top.
      grid.prepend(card);
      card.dataset.status = "uploading";
      card.querySelector(".tile").classList.remove("is-refused");
      upload.progress.hidden = false;
      upload.reason.textContent = "";
      upload.retry.hidden = upload.dismiss.hidden = true;
      uploadTokenDeclined = false;
      queue.push(upload);
      pump();
    });
    upload.dismiss.addEventListener("click", () => {
      const next = card.nextElementSibling;
      card.remove();
      if (upload.preview) URL.revokeObjectURL(upload.preview);
      ((next && next.querySelector(FOCUSABLE)) || grid).focus();
      updateEmpty();
    });
    return card;
  }

  function setUploadState(upload, state, info) {
    upload.state.textContent = state;
    upload.info.textContent = info;
  }

  function refuse(upload, code, detail, retry) {
    upload.card.dataset.status = "refused";
    upload.card.querySelector(".tile").classList.add("is-refused");
    upload.progress.hidden = true;
    setUploadState(upload, "Not uploaded", "Refused");
    upload.reason.textContent = words(code, detail);
    upload.retry.hidden = !retry;
    upload.dismiss.hidden = false;
    announce(`${upload.file.name} was not uploaded: ${words(code, detail)}`);
  }

  async function pump() {
    if (active >= PARALLEL_UPLOADS || !queue.length) return;
    const upload = queue.shift();
    active += 1;
    try {
      await send(upload);
    } finally {
      active -= 1;
      pump();
    }
  }

  // Batch order. The grid lists newest first by id, and the server makes ids from the time it
  // grants an upload. Files chosen together should read in the order they were chosen, first
  // chosen first, now and after a reload: so the first chosen needs the newest id. Grants are
  // therefore asked for one at a time, each once the previous one is answered, in queue order (a
  // batch's last chosen file first, see addFiles), and each grant's id must sort before the one
  // before it. (Google Photos sorts its library by the date a photo was taken, which imageshelf
  // does not keep; its albums' "Recently added" order, newest batch on top, is this one.)
  let grantChain = Promise.resolve();
  let newestGrant = null;

  function requestGrant(file) {
    const asked = grantChain.then(() => orderedGrant(file));
    grantChain = asked.catch(() => {});
    return asked;
  }

  async function orderedGrant(file) {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    const token = config.uploadTokenRequired ? await uploadTokenToSend() : null;
    if (token) headers.Authorization = `Bearer ${token}`;
    for (let attempt = 1; ; attempt += 1) {
      let grant;
      try {
        grant = await api("uploads", {
          method: "POST",
          headers,
          body: JSON.stringify({ filename: file.name, content_type: file.type, size: file.size }),
        });
      } catch (error) {
        if (error.code !== "unauthorized" && error.code !== "forbidden") throw error;
        if (token === uploadToken) setUploadToken(null); // refused: forgotten, asked for again
        throw new ApiError("upload_token_refused", error.message, error.status);
      }
      const newer = newestGrant === null || grant.id < newestGrant;
      // Two grants in one millisecond (or from two servers whose clocks differ a little) can sort
      // the wrong way round: ask again a moment later. An unused grant costs nothing and expires.
      if (newer || attempt >= 4) {
        if (newer) newestGrant = grant.id;
        return grant;
      }
      await sleep(3 * attempt);
    }
  }

  async function send(upload) {
    const { file } = upload;
    setUploadState(upload, "Uploading…", "0%");
    let grant;
    try {
      grant = await requestGrant(file);
    } catch (error) {
      const again = error.code === "network" || error.status >= 500 || error.code.startsWith("upload_token");
      refuse(upload, error.code, error.message, again); // a token refusal: retry asks for it again
      return;
    }
    const outcome = await post(grant, file, (percent) => {
      upload.progress.value = percent;
      setUploadState(upload, `Uploading ${percent}%`, `${percent}%`);
    });
    if (outcome) {
      refuse(upload, outcome, "", outcome === "upload_failed" || outcome === "network");
      return;
    }
    upload.progress.value = 100;
    rememberUpload(grant.id); // this browser's: it shows this image even if processing fails
    setUploadState(upload, "Processing…", "Processing");
    upload.card.dataset.status = "processing";
    upload.card.dataset.id = grant.id;
    entries.set(grant.id, { image: null, card: upload.card, pinned: true, localName: file.name, preview: upload.preview });
    watch(grant.id, 250);
  }

  // The presigned POST, by XMLHttpRequest because fetch cannot report upload progress.
  // Resolves to null on success or an error code.
  function post(grant, file, onProgress) {
    return new Promise((resolve) => {
      const form = new FormData();
      for (const [name, value] of Object.entries(grant.fields || {})) form.append(name, value);
      form.append("file", file); // S3 ignores every field after the file: it must come last
      const xhr = new XMLHttpRequest();
      xhr.open("POST", grant.url);
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(Math.min(100, Math.round((event.loaded / event.total) * 100)));
      });
      xhr.addEventListener("load", () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          onProgress(100);
          resolve(null);
        } else {
          // S3 answers in XML; a size refusal is the one worth telling apart.
          resolve(/EntityTooLarge/.test(xhr.responseText || "") ? "file_too_large"
            : /EntityTooSmall/.test(xhr.responseText || "") ? "empty_file" : "upload_failed");
        }
      });
      xhr.addEventListener("error", () => resolve("network"));
      xhr.addEventListener("abort", () => resolve("upload_failed"));
      xhr.send(form);
    });
  }

  // Drag and drop anywhere on the page. Counting enter/leave pairs keeps the overlay from
  // flickering as the pointer crosses child elements.
  function setupDrop() {
    const zone = $("drop-zone");
    let depth = 0;
    const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
    document.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth += 1;
      zone.hidden = false;
    });
    document.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    document.addEventListener("dragleave", (event) => {
      if (!hasFiles(event)) return;
      depth = Math.max(0, depth - 1);
      if (!depth) zone.hidden = true;
    });
    document.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth = 0;
      zone.hidden = true;
      addFiles(event.dataTransfer.files);
    });
    // Pasting a copied image uploads it too.
    document.addEventListener("paste", (event) => {
      const files = event.clipboardData && event.clipboardData.files;
      if (files && files.length && !(event.target instanceof HTMLInputElement)) addFiles(files);
    });
  }

  // --- lightbox ---------------------------------------------------------------------------

  let current = null;
  let openerId = null;
  const stage = $("lightbox-stage");
  const lightboxImage = $("lightbox-image");
  const VIEW_SIDES = (config.viewSides || []).slice().sort((a, b) => a - b);
  // The photo shown and its render: the rendition shown first (the fallback), whether it has
  // loaded, and the view-<N> side last asked for (a side is asked for once per showing).
  let view = { id: null, fallback: "", ready: false, asked: 0, shown: 0, loader: null };

  function readyIds() {
    return Array.from(grid.children)
      .filter((card) => card.dataset.status === "ready" && entries.has(card.dataset.id))
      .map((card) => card.dataset.id);
  }

  function openLightbox(id) {
    openerId = id;
    lightbox.showModal();
    show(id);
    $("lightbox-close").focus();
  }

  // The original's size in pixels, upright, or null if unknown.
  function ownSize(image) {
    const original = image.original || {};
    return original.width > 0 && original.height > 0 ? [original.width, original.height] : null;
  }

  // The stage's content box: the room the photo has.
  function stageBox() {
    const style = getComputedStyle(stage);
    return [
      stage.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight),
      stage.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom),
    ];
  }

  // The photo whole inside the stage (CSS contain), at most at its own size (a pixel to a CSS
  // pixel), whatever the rendition or render shown: sized in pixels, so the swap to a render of
  // another size moves nothing.
  function fitImage() {
    const entry = current !== null && entries.get(current);
    if (!entry || !entry.image) return;
    const largest = renditionsOf(entry.image).slice(-1)[0];
    const [width, height] = ownSize(entry.image) || [largest.width, largest.height];
    const [boxWidth, boxHeight] = stageBox();
    if (!(boxWidth > 0 && boxHeight > 0 && width > 0 && height > 0)) return;
    const scale = Math.min(boxWidth / width, boxHeight / height, 1);
    lightboxImage.style.width = `${Math.max(1, Math.floor(width * scale))}px`;
    lightboxImage.style.height = `${Math.max(1, Math.floor(height * scale))}px`;
  }

  // The view-<N> preset for this photo on this screen: the smallest N covering the viewport's
  // width and the stage's height in device pixels, or the original's long side when that is less
  // (a render is never enlarged); the largest preset when none covers. Presets, because a stage
  // with a signing key serves only those unsigned.
  function viewSide(image) {
    if (!VIEW_SIDES.length) return 0;
    const need = Math.max(window.innerWidth, stageBox()[1]) * (window.devicePixelRatio || 1);
    const own = ownSize(image);
    const target = own ? Math.min(need, Math.max(own[0], own[1])) : need;
    return VIEW_SIDES.find((side) => side >= target) || VIEW_SIDES[VIEW_SIDES.length - 1];
  }

  // Once the rendition shows, load the render that fits the screen (format=auto: AVIF or WebP
  // where the browser takes them) and swap it in when decoded, so nothing blanks; a render that
  // fails leaves the rendition. Again when the stage grows (a larger side), never for a smaller.
  function upgrade() {
    const id = current;
    const entry = id !== null && entries.get(id);
    if (!lightbox.open || !entry || !entry.image || view.id !== id || !view.ready) return;
    const side = viewSide(entry.image);
    if (!side || side <= view.asked) return;
    view.asked = side;
    const url = `images/${encodeURIComponent(id)}/render?preset=view-${side}`;
    const loader = new Image();
    view.loader = loader;
    loader.src = url;
    loader.decode().then(() => {
      if (view.loader !== loader || current !== id) return;
      view.shown = side;
      lightboxImage.setAttribute("src", url);
    }, () => { /* no render: the rendition stays */ });
  }

  function show(id) {
    const entry = entries.get(id);
    if (!entry || !entry.image) return;
    current = id;
    const image = entry.image;
    const renditions = renditionsOf(image);
    const largest = renditions[renditions.length - 1];
    const img = lightboxImage;
    view = { id, fallback: largest.url, ready: false, asked: 0, shown: 0, loader: null };
    img.removeAttribute("src"); // drop the previous photo at once rather than show it under the new name
    img.setAttribute("width", largest.width);
    img.setAttribute("height", largest.height);
    img.setAttribute("alt", filenameOf(image));
    img.setAttribute("src", largest.url);
    // Until it loads, the tile's thumbnail (already here) stretched in its place, not a blank.
    const tile = entry.card.querySelector("a.tile img");
    const thumb = tile && tile.complete && tile.naturalWidth > 0 ? tile.currentSrc : "";
    // (A URL as the browser writes it has no quote or newline; anything odd is left out.)
    if (thumb && !img.complete && !/["\\\s]/.test(thumb)) img.style.setProperty("background-image", `url("${thumb}")`);
    else img.style.removeProperty("background-image");
    fitImage();
    const original = image.original || {};
    $("lightbox-title").textContent = filenameOf(image);
    $("lightbox-dims").textContent = original.width ? `${original.width} × ${original.height} px` : "";
    const time = $("lightbox-time");
    time.setAttribute("datetime", image.created_at);
    time.textContent = dateFormat.format(new Date(image.created_at));
    const ids = readyIds();
    const index = ids.indexOf(id);
    $("lightbox-position").textContent = `${index + 1} of ${ids.length}${nextCursor ? "+" : ""}`;
    $("lightbox-prev").disabled = index <= 0;
    $("lightbox-next").disabled = index >= ids.length - 1 && !nextCursor;
    $("lightbox-message").textContent = "";
    resetConfirm($("lightbox-delete"), "Delete");
    $("lightbox-delete").hidden = !adminToken;
    closeMenu(false);
    fillDownloads(image);
    if (!detailsPanel.hidden) loadDetails(id);
    // Warm the neighbours so arrow keys feel instant.
    for (const near of [ids[index - 1], ids[index + 1]]) {
      const other = near && entries.get(near);
      if (other && other.image) new Image().src = renditionsOf(other.image).slice(-1)[0].url;
    }
  }

  async function step(delta) {
    if (!lightbox.open || current === null) return;
    let ids = readyIds();
    let index = ids.indexOf(current) + delta;
    if (index >= ids.length && nextCursor) {
      await loadMore();
      ids = readyIds();
    }
    index = Math.max(0, Math.min(ids.length - 1, index));
    if (ids[index] && ids[index] !== current) show(ids[index]);
  }

  // Every way out (Escape, Close, a click beside the photo, its deletion elsewhere) comes here, so focus
  // goes back at once to the tile of the photo last shown, not the one the dialog was opened from.
  function closeLightbox() {
    if (!lightbox.open) return;
    const entry = entries.get(current) || entries.get(openerId);
    closeMenu(false);
    lightbox.close();
    lightboxImage.removeAttribute("src");
    view = { id: null, fallback: "", ready: false, asked: 0, shown: 0, loader: null };
    current = null;
    const target = entry && entry.card.isConnected && entry.card.querySelector("a.tile");
    (target || grid).focus();
  }

  // --- lightbox: the Download menu ----------------------------------------------------------

  // A menu button (aria-haspopup="menu") over a list of links, as the WAI-ARIA menu button pattern
  // has it: Enter, Space or Down opens it on its first item, Up on its last; Up, Down, Home and End
  // move; Escape closes it and returns to the button; Tab, a click elsewhere or a choice close it.
  const menuButton = $("download-button");
  const menu = $("download-menu");
  const menuAnchor = menu.parentElement;
  let menuClosedByPointer = false;

  const menuItems = () => Array.from(menu.querySelectorAll('[role="menuitem"]')).filter((item) => !item.closest("[hidden]"));

  function openMenu(last) {
    menu.hidden = false;
    menuButton.setAttribute("aria-expanded", "true");
    const items = menuItems();
    const item = last ? items[items.length - 1] : items[0];
    if (item) item.focus();
  }

  function closeMenu(refocus) {
    if (menu.hidden) return;
    menu.hidden = true;
    menuButton.setAttribute("aria-expanded", "false");
    if (refocus) menuButton.focus();
  }

  // The links of this photo: the largest rendition (the API offers no original to download: its
  // label says what it is) and the converted copies, made by the stage's format presets.
  function fillDownloads(image) {
    const largest = renditionsOf(image).slice(-1)[0];
    const original = image.original || {};
    const own = ownSize(image);
    const link = $("download-largest");
    const formatName = (type) => config.formatLabels[type] || type || "";
    if (original.url) { // should the API ever offer the original itself
      link.setAttribute("href", original.url);
      $("download-largest-label").textContent = "Original";
      $("download-largest-hint").textContent = own ? `${own[0]} × ${own[1]} ${formatName(original.format)}` : formatName(original.format);
    } else {
      link.setAttribute("href", largest.url);
      $("download-largest-label").textContent = "Largest size";
      $("download-largest-hint").textContent = `${largest.width} × ${largest.height} ${formatName(largest.content_type)}, opens in a new tab`;
    }
    const boxes = new Map((config.downloads || []).map((d) => [d.preset, d.box]));
    for (const item of menu.querySelectorAll("[data-preset]")) {
      const preset = item.dataset.preset;
      item.setAttribute("href", `images/${encodeURIComponent(image.id)}/render?preset=${encodeURIComponent(preset)}`);
      const box = boxes.get(preset);
      const hint = item.querySelector(".menu-hint");
      if (own && box) {
        const scale = Math.min(box[0] / own[0], box[1] / own[1], 1);
        hint.textContent = `${Math.round(own[0] * scale)} × ${Math.round(own[1] * scale)}, converted`;
      }
    }
  }

  function setupMenu() {
    menuButton.addEventListener("click", () => (menu.hidden ? openMenu(false) : closeMenu(true)));
    menuButton.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
      event.preventDefault();
      event.stopPropagation();
      openMenu(event.key === "ArrowUp");
    });
    menuAnchor.addEventListener("keydown", (event) => {
      if (menu.hidden) return;
      if (event.key === "Escape") {
        event.preventDefault(); // not the dialog's Escape: only the menu closes
        event.stopPropagation();
        closeMenu(true);
        return;
      }
      if (!menu.contains(event.target)) return;
      const items = menuItems();
      const index = items.indexOf(document.activeElement);
      const moves = {
        ArrowDown: items[(index + 1) % items.length],
        ArrowUp: items[(index - 1 + items.length) % items.length],
        Home: items[0],
        End: items[items.length - 1],
      };
      if (event.key in moves) {
        event.preventDefault();
        event.stopPropagation(); // not the lightbox's arrows
        if (moves[event.key]) moves[event.key].focus();
      } else if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
        event.stopPropagation(); // the menu is open: the arrows do not change the photo
      } else if (event.key === " ") {
        event.preventDefault(); // Space chooses, as in menus (a link alone takes only Enter)
        document.activeElement.click();
      } else if (event.key === "Tab") {
        closeMenu(false);
      }
    });
    menu.addEventListener("click", (event) => {
      if (event.target.closest('[role="menuitem"]')) closeMenu(true);
    });
    // Focus gone elsewhere (a screen reader's cursor, a click on another button): closed.
    menuAnchor.addEventListener("focusout", (event) => {
      if (event.relatedTarget && !menuAnchor.contains(event.relatedTarget)) closeMenu(false);
    });
    // A click outside closes the menu, and does nothing else if it fell beside the photo.
    lightbox.addEventListener("pointerdown", (event) => {
      menuClosedByPointer = !menu.hidden && !menuAnchor.contains(event.target);
      if (menuClosedByPointer) closeMenu(false);
    }, true);
  }

  // --- lightbox: the details panel ----------------------------------------------------------

  // GET /images/{id}/info when the panel opens (and for each photo shown while it is open), one
  // request per photo; facts are written as text into the rows of templates/gallery.html.
  const detailsPanel = $("lightbox-details");
  const detailsToggle = $("lightbox-details-toggle");
  const detailsStatus = $("lightbox-details-status");
  const detailsCache = new Map(); // id -> the info answer's promise (failures are not kept)
  const takenFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" });
  const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" });

  function setDetails(open) {
    detailsPanel.hidden = !open;
    detailsToggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (open && current !== null) loadDetails(current);
  }

  function detailsOf(id) {
    if (!detailsCache.has(id)) {
      const asked = api(`images/${encodeURIComponent(id)}/info`);
      detailsCache.set(id, asked);
      asked.catch(() => detailsCache.delete(id)); // asked again next time
    }
    return detailsCache.get(id);
  }

  async function loadDetails(id) {
    for (const row of detailsPanel.querySelectorAll("[data-fact]")) row.hidden = true;
    detailsStatus.textContent = "Loading details…";
    let info;
    try {
      info = await detailsOf(id);
    } catch (error) {
      if (current === id) detailsStatus.textContent = detailsError(error);
      return;
    }
    if (current !== id || detailsPanel.hidden) return;
    detailsStatus.textContent = "";
    fillDetails(info || {}, entries.has(id) ? entries.get(id).image : null);
  }

  function detailsError(error) {
    if (error.code === "image_pending") return "The details are not ready yet: the photo is still being processed.";
    if (error.code === "image_failed") return "This photo could not be processed, so it has no details.";
    if (error.code === "not_found") return words("not_found");
    if (error.code === "network") return words("network");
    return "The details couldn't be loaded. Please try again in a moment.";
  }

  function setFact(name, text) {
    const row = detailsPanel.querySelector(`[data-fact="${name}"]`);
    row.hidden = !text;
    if (text && name !== "location") (row.querySelector("time") || row.querySelector("dd")).textContent = text;
    return row;
  }

  function fillDetails(info, image) {
    const camera = info.camera && typeof info.camera === "object" ? info.camera : {};
    setFact("camera", cameraName(camera));
    setFact("lens", text(camera.lens));
    const taken = takenAt(camera.taken_at);
    const row = setFact("taken", taken.text);
    if (taken.datetime) row.querySelector("time").setAttribute("datetime", taken.datetime);
    else row.querySelector("time").removeAttribute("datetime");
    // Each part kept on one line (no-break spaces), the line broken only between parts.
    setFact("exposure", [exposureTime(camera.exposure_time), fNumber(camera.f_number),
      camera.iso ? `ISO ${number(camera.iso)}` : "", focalLength(camera.focal_length)]
      .filter(Boolean).map((part) => part.replace(/ /g, "\u00a0")).join(", "));
    const own = (image && ownSize(image)) || [];
    const width = info.width || own[0];
    const height = info.height || own[1];
    setFact("dimensions", width && height ? `${width} × ${height} px` : "");
    const format = config.formatLabels[info.format] || text(info.format);
    const frames = Number(info.frames) > 1 ? `, ${plural(Number(info.frames), "frame", "frames")}` : "";
    setFact("format", format ? format + frames : "");
    setFact("location", info.has_location === true ? "yes" : "");
  }

  // --- lightbox: words for EXIF values (numbers or strings, whichever the API sends) --------

  const text = (value) => (typeof value === "string" || typeof value === "number" ? String(value).trim() : "");

  // An EXIF rational may come as a number, "1/160", or [numerator, denominator].
  function number(value) {
    if (Array.isArray(value)) return value.length === 2 && value[1] ? value[0] / value[1] : number(value[0]);
    if (typeof value === "string" && /^\s*\d+(\.\d+)?\s*\/\s*\d+(\.\d+)?\s*$/.test(value)) {
      const [numerator, denominator] = value.split("/").map(Number);
      return denominator ? numerator / denominator : NaN;
    }
    return typeof value === "string" || typeof value === "number" ? Number(value) : NaN;
  }

  const short = (value, digits) => String(Number(value.toFixed(digits)));

  // "Canon PowerShot G1 X Mark II", not "Canon Canon PowerShot G1 X Mark II".
  function cameraName(camera) {
    const make = text(camera.make);
    const model = text(camera.model);
    if (!model) return make;
    const brand = make.split(/[\s,]+/)[0].toLowerCase();
    return make && !model.toLowerCase().startsWith(brand) ? `${make} ${model}` : model;
  }

  function exposureTime(value) {
    const seconds = number(value);
    if (!(seconds > 0)) return "";
    const inverse = 1 / seconds;
    if (seconds < 1 && Math.abs(inverse - Math.round(inverse)) <= 0.05 * inverse) return `1/${Math.round(inverse)} s`;
    return `${short(seconds, seconds < 0.1 ? 3 : 1)} s`;
  }

  function fNumber(value) {
    const f = number(value);
    return f > 0 ? `f/${short(f, 1)}` : "";
  }

  function focalLength(value) {
    const mm = number(value);
    return mm > 0 ? `${short(mm, 1)} mm` : "";
  }

  // EXIF dates have no time zone: the camera's clock is shown as it was, not converted.
  function takenAt(value) {
    const raw = text(value);
    const match = /^(\d{4})[:-](\d{2})[:-](\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?/.exec(raw);
    if (!match) return { text: raw, datetime: "" };
    const [, y, mo, d, h, mi, s] = match;
    const date = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h || 0), Number(mi || 0), Number(s || 0)));
    if (Number.isNaN(date.getTime())) return { text: raw, datetime: "" };
    const day = `${y}-${mo}-${d}`;
    return h === undefined
      ? { text: dayFormat.format(date), datetime: day }
      : { text: takenFormat.format(date), datetime: `${day}T${h}:${mi}:${s || "00"}` };
  }

  function setupLightbox() {
    grid.addEventListener("click", (event) => {
      const tile = event.target.closest("a.tile");
      if (!tile || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      const id = tile.closest(".card").dataset.id;
      if (!entries.has(id)) return;
      event.preventDefault();
      openLightbox(id);
    });
    $("lightbox-prev").addEventListener("click", () => step(-1));
    $("lightbox-next").addEventListener("click", () => step(1));
    $("lightbox-close").addEventListener("click", closeLightbox);
    detailsToggle.addEventListener("click", () => setDetails(detailsPanel.hidden));
    lightbox.addEventListener("keydown", (event) => {
      if (event.key === "ArrowLeft") { event.preventDefault(); step(-1); }
      if (event.key === "ArrowRight") { event.preventDefault(); step(1); }
      if ((event.key === "i" || event.key === "I") && !event.ctrlKey && !event.metaKey && !event.altKey
        && !menu.contains(event.target)) {
        setDetails(detailsPanel.hidden);
      }
    });
    // The rendition first, then the render (see upgrade); a render that fails to show: the rendition.
    lightboxImage.addEventListener("load", () => {
      lightboxImage.style.removeProperty("background-image"); // a transparent photo shows no thumbnail through
      view.ready = true;
      upgrade();
    });
    lightboxImage.addEventListener("error", () => {
      if (!lightboxImage.getAttribute("src")) return;
      lightboxImage.style.removeProperty("background-image");
      view.ready = true;
      if (view.shown && view.fallback) {
        view.shown = 0;
        lightboxImage.setAttribute("src", view.fallback);
      } else {
        upgrade();
      }
    });
    // The window, the details panel or the bar changed the room the photo has.
    new ResizeObserver(() => {
      if (!lightbox.open) return;
      fitImage();
      upgrade();
    }).observe(stage);
    // Swipe left or right on a touch screen, as in phone photo apps.
    let touchX = null;
    lightbox.addEventListener("touchstart", (event) => { touchX = event.touches[0].clientX; }, { passive: true });
    lightbox.addEventListener("touchend", (event) => {
      const dx = touchX === null ? 0 : event.changedTouches[0].clientX - touchX;
      touchX = null;
      if (Math.abs(dx) > 50) step(dx < 0 ? 1 : -1);
    });
    setupMenu();
    // A click on the dark area around the photo closes, as in most photo viewers (unless it
    // only closed the Download menu).
    lightbox.addEventListener("click", (event) => {
      if (menuClosedByPointer) { menuClosedByPointer = false; return; }
      if (event.target === lightbox || event.target === stage) closeLightbox();
    });
    // Escape would close the modal <dialog> natively; closing it ourselves also places focus.
    // With the Download menu open, Escape closes only the menu.
    lightbox.addEventListener("cancel", (event) => {
      event.preventDefault();
      if (!menu.hidden) closeMenu(true);
      else closeLightbox();
    });
    $("lightbox-delete").addEventListener("click", (event) => {
      confirmThen(event.currentTarget, "Delete", "Really delete?", async () => {
        const id = current;
        const ids = readyIds();
        const next = ids[ids.indexOf(id) + 1] || ids[ids.indexOf(id) - 1];
        current = null; // the lightbox moves on by itself: removing the card must not close it
        try {
          await deleteImage(id);
        } catch (error) {
          current = id;
          $("lightbox-message").textContent = words(error.code);
          return;
        }
        if (next && entries.has(next)) show(next);
        else closeLightbox();
      });
    });
  }

  // --- deletion ---------------------------------------------------------------------------

  // Two clicks to delete: the first arms the button for a few seconds.
  function confirmThen(button, label, question, action) {
    if (button.dataset.armed === "yes") {
      resetConfirm(button, label);
      action();
      return;
    }
    button.dataset.armed = "yes";
    button.classList.add("is-confirming");
    button.textContent = question;
    clearTimeout(Number(button.dataset.timer));
    button.dataset.timer = String(setTimeout(() => resetConfirm(button, label), 4000));
  }

  function resetConfirm(button, label) {
    clearTimeout(Number(button.dataset.timer));
    button.dataset.armed = "";
    button.classList.remove("is-confirming");
    if (label === null) button.replaceChildren(cardTemplate.querySelector(".delete-button svg").cloneNode(true));
    else button.textContent = label;
  }

  async function deleteImage(id) {
    const name = entries.has(id) && entries.get(id).image ? filenameOf(entries.get(id).image) : "The photo";
    try {
      await api(`images/${encodeURIComponent(id)}`, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${adminToken}`, Accept: "application/json" },
      });
    } catch (error) {
      if (error.code === "not_found") { failures.delete(id); removeImage(id); return; }
      if (error.code === "forbidden" || error.code === "unauthorized") setToken(null);
      throw error;
    }
    // Removed only now that the API has confirmed.
    failures.delete(id);
    removeImage(id);
    announce(`${name} was deleted.`);
  }

  // Admin tools on a card: a delete button, shown only while this tab holds the token. A failure this
  // browser uploaded can be dismissed (the admin deletes instead).
  function decorate(card) {
    const dismiss = card.querySelector('[data-action="dismiss-failed"]');
    if (dismiss) dismiss.hidden = Boolean(adminToken) || !mine.has(card.dataset.id);
    const existing = card.querySelector(".delete-button");
    if (!adminToken || !card.dataset.id) {
      if (existing) existing.remove();
      return;
    }
    if (existing) return;
    const button = cardTemplate.querySelector(".delete-button").cloneNode(true);
    button.setAttribute("aria-label", `Delete ${card.querySelector(".name").textContent}`);
    button.addEventListener("click", () => {
      confirmThen(button, null, "Delete?", async () => {
        try {
          await deleteImage(card.dataset.id);
        } catch (error) {
          toast(words(error.code));
        }
      });
    });
    card.querySelector(".caption").append(button);
  }

  function setToken(token) {
    adminToken = token || null;
    try {
      if (adminToken) sessionStorage.setItem(TOKEN_KEY, adminToken);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled: the token lasts until the page closes */ }
    const button = $("admin-button");
    if (button) {
      button.textContent = adminToken ? "Leave admin" : "Admin";
      button.setAttribute("aria-pressed", adminToken ? "true" : "false");
    }
    applyFailures();
    for (const card of grid.children) decorate(card);
    if (lightbox.open) $("lightbox-delete").hidden = !adminToken;
  }

  // --- the upload token (stages that ask for one) ------------------------------------------

  let uploadToken = null;
  let uploadTokenAsked = null; // the open dialog's answer, shared by the uploads waiting for it
  let uploadTokenDeclined = false; // cancelled: the rest of this batch is not asked again

  function setUploadToken(token) {
    uploadToken = token || null;
    try {
      if (uploadToken) sessionStorage.setItem(UPLOAD_TOKEN_KEY, uploadToken);
      else sessionStorage.removeItem(UPLOAD_TOKEN_KEY);
    } catch (_) { /* storage disabled: the token lasts until the page closes */ }
  }

  // The token a grant request sends: the upload token, else the admin token (the API takes
  // both), else one asked for in the dialog. Throws "upload_token_needed" if none is given.
  async function uploadTokenToSend() {
    const token = uploadToken || adminToken || (uploadTokenDeclined ? null : await askUploadToken());
    if (!token) throw new ApiError("upload_token_needed", "", 401);
    return token;
  }

  function askUploadToken() {
    if (uploadTokenAsked) return uploadTokenAsked;
    const dialog = $("upload-token-dialog");
    uploadTokenAsked = new Promise((resolve) => {
      $("upload-token").value = "";
      dialog.returnValue = "";
      dialog.addEventListener("close", () => {
        const token = dialog.returnValue === "use" ? $("upload-token").value.trim() : "";
        uploadTokenAsked = null;
        if (token) setUploadToken(token);
        else uploadTokenDeclined = true;
        resolve(token || null);
      }, { once: true });
      dialog.showModal();
    });
    return uploadTokenAsked;
  }

  function setupUploadToken() {
    if (!config.uploadTokenRequired) return;
    let stored = null;
    try { stored = sessionStorage.getItem(UPLOAD_TOKEN_KEY); } catch (_) { /* storage disabled */ }
    setUploadToken(stored);
    const dialog = $("upload-token-dialog");
    $("upload-token-cancel").addEventListener("click", () => dialog.close(""));
    $("upload-token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if ($("upload-token").value.trim()) dialog.close("use");
    });
  }

  function setupAdmin() {
    if (!config.deletionEnabled) return;
    let stored = null;
    try { stored = sessionStorage.getItem(TOKEN_KEY); } catch (_) { /* storage disabled */ }
    // A token in the fragment (#token=...) is taken once and removed from the address bar;
    // fragments are never sent to the server, so it stays out of access logs.
    const match = /^#token=(.+)$/.exec(location.hash);
    if (match) {
      stored = decodeURIComponent(match[1]);
      history.replaceState(null, "", location.pathname + location.search);
    }
    const button = $("admin-button");
    const dialog = $("admin-dialog");
    button.hidden = false;
    button.addEventListener("click", () => {
      if (adminToken) {
        setToken(null);
        announce("Admin token forgotten.");
      } else {
        $("admin-token").value = "";
        dialog.showModal();
      }
    });
    $("admin-cancel").addEventListener("click", () => dialog.close());
    $("admin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("admin-token").value.trim();
      if (!token) return;
      dialog.close();
      setToken(token);
      announce("Admin token set: delete buttons are shown.");
    });
    dialog.addEventListener("close", () => button.focus());
    setToken(stored);
  }

  // --- start ------------------------------------------------------------------------------

  function start() {
    for (const link of grid.querySelectorAll("a.tile")) paintPlaceholder(link);
    // Adopt the server-rendered cards instead of redrawing them (their images are already loading).
    const cards = new Map(Array.from(grid.children).map((card) => [card.dataset.id, card]));
    for (const image of config.firstPage.images) {
      const card = cards.get(image.id);
      if (!card) {
        // Left out of the public page: shown below if it is this browser's or the tab is admin.
        if (statusOf(image) === "failed") failures.set(image.id, image);
        continue;
      }
      entries.set(image.id, { image, card, pinned: false, sig: signature(image) });
      if (image.status === "pending") watch(image.id, 1000);
    }
    const input = $("file-input");
    input.addEventListener("change", () => {
      addFiles(input.files);
      input.value = ""; // choosing the same file again still fires change
    });
    $("load-more").addEventListener("click", async () => {
      moreFailed = false;
      const before = grid.children.length;
      await loadMore();
      // A keyboard user who pressed the button carries on from the first new photo.
      const first = grid.children[before];
      if (first && document.activeElement === $("load-more")) (first.querySelector(FOCUSABLE) || grid).focus();
    });
    $("banner-retry").addEventListener("click", refresh);
    // A presigned thumbnail URL can expire on a long-open page: fetch fresh URLs once.
    const retried = new Set();
    grid.addEventListener("error", async (event) => {
      const card = event.target.closest && event.target.closest(".card");
      if (!card || !card.dataset.id || retried.has(card.dataset.id)) return;
      retried.add(card.dataset.id);
      try { upsertFresh(await api(`images/${encodeURIComponent(card.dataset.id)}`)); } catch (_) { /* keep as is */ }
    }, true);
    grid.addEventListener("click", (event) => {
      const button = event.target.closest('[data-action="dismiss-failed"]');
      if (button) dismissFailure(button.closest(".card").dataset.id);
    });
    // Another tab of this browser uploaded or dismissed something.
    window.addEventListener("storage", (event) => {
      if (event.key !== MINE_KEY) return;
      mine = readMine() || mine;
      applyFailures();
      for (const card of grid.children) decorate(card);
    });
    setupLayout();
    setupDrop();
    setupLightbox();
    setupAdmin();
    setupUploadToken();
    applyFailures();
    if (!grid.children.length && nextCursor) loadMore(); // the first page was all hidden failures
    observer.observe($("load-more").parentElement);
    setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
    updateEmpty();
  }

  function upsertFresh(image) {
    const entry = entries.get(image.id);
    if (entry) entry.sig = ""; // refill even if the URLs are the same: the failure may have been a blip
    upsert(image);
  }

  start();
})();
