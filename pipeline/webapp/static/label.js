// The labelling page: one pair at a time, keys y / n / s and u (undo).
//
// No answer is lost: a keypress becomes an entry with a fresh client id in an outbox kept in
// localStorage, and the entry is sent (and resent, same id) until the server confirms it; only then
// does the next pair show. A reload, a dropped connection or a restarted server resends what is in
// the outbox first. Captions and URLs are untrusted: they go on the page with textContent only.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { me: null, item: null, shownAt: 0, busy: true, queue: "", queues: [], lastProgress: 0 };
  const outboxKey = () => `glide-outbox:${state.me.rater}`;

  function status(text, kind) {
    $("status").textContent = text;
    $("status").dataset.kind = kind || "";
  }

  function only(section) {
    for (const id of ["signed-out", "done", "work"]) $(id).hidden = id !== section;
  }

  async function show(item) {
    state.item = item;
    const work = $("work");
    delete work.dataset.uid;
    if (!item) {
      only("done");
      state.busy = false;
      return;
    }
    only("work");
    $("filter").textContent = item.filter;
    $("caption").textContent = item.caption || "(no caption)";
    $("source").textContent = item.url ? `from ${item.url}` : "";
    const image = $("image");
    $("no-image").hidden = item.image;
    image.hidden = !item.image;
    if (item.image) {
      image.src = `/image/${encodeURIComponent(item.uid)}`;
      try {
        await image.decode();
      } catch (e) {
        $("no-image").hidden = false;
      }
    }
    work.dataset.uid = item.uid;   // the pair on screen is ready for a key
    state.shownAt = performance.now();
    state.busy = false;
    showProgress();
  }

  // signed out or a stale page: the answer is kept for later
  const box = glide.outbox(outboxKey, status, (e) => e.status === 401 || e.status === 403);

  async function send(entry) {
    state.busy = true;
    box.add(entry);   // stored on this device before the request leaves
    status("saving…", "");
    let reply;
    try {
      reply = await box.flush();
    } catch (e) {
      return;   // stays busy: nothing more until the page is reloaded
    }
    status(entry.path === "/api/undo" ? undoMessage(reply) : "", "");
    await show(reply ? reply.next : state.item);
  }

  function undoMessage(reply) {
    if (!reply || !reply.undone) return "Nothing left to undo.";
    const back = reply.undone.restored ? `; your earlier "${reply.undone.restored}" stands again` : "";
    return `Undid "${reply.undone.answer}"${back}. Answer this pair again.`;
  }

  function answer(value) {
    if (state.busy || !state.item) return;
    const item = state.item;
    send({
      path: "/api/labels",
      body: {
        client_id: glide.newId(), uid: item.uid, filter: item.filter, queue_id: item.queue_id, answer: value,
        created: new Date().toISOString(), answer_ms: Math.max(0, Math.round(performance.now() - state.shownAt)),
        queue: state.queue ? Number(state.queue) : null,
      },
    });
  }

  function undo() {
    if (state.busy) return;
    send({ path: "/api/undo", body: { client_id: glide.newId(), queue: state.queue ? Number(state.queue) : null } });
  }

  async function refreshProgress() {
    try {
      state.queues = (await glide.getJson("/api/progress")).queues;
    } catch (e) {
      return;
    }
    const select = $("queue");
    const chosen = state.queue;
    select.replaceChildren(glide.el("option", "any with work", { value: "" }));
    for (const q of state.queues) {
      const option = glide.el("option", `${q.name} (${q.filter}, ${q.answered}/${q.items})`, { value: String(q.id) });
      select.append(option);
    }
    select.value = state.queues.some((q) => String(q.id) === chosen) ? chosen : "";
    showProgress(true);
  }

  // The current queue's progress: shown from the last figures at once, fetched again a second after
  // the rater pauses (or every 3 s while they keep going), one request at a time.
  function showProgress(fresh) {
    const id = state.item ? String(state.item.queue_id) : state.queue;
    const q = state.queues.find((x) => String(x.id) === id);
    if (!q) {
      $("progress").textContent = "";
      $("progressfill").style.width = "0";
    } else {
      const k = q.labels_per_item > 1 ? `, ${q.labels_per_item} raters each` : "";
      $("progress").textContent = `${q.name}: ${q.answered} of ${q.items} pairs done${k} · yours: ${q.mine}`;
      $("progressfill").style.width = `${q.items ? (100 * q.answered) / q.items : 0}%`;
    }
    if (fresh) return;
    clearTimeout(state.progressTimer);
    const due = performance.now() - state.lastProgress > 3000 ? 0 : 1000;
    state.progressTimer = setTimeout(async () => {
      state.lastProgress = performance.now();
      await refreshProgress();
    }, due);
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.target instanceof HTMLSelectElement || event.target instanceof HTMLInputElement) return;
    const key = event.key.toLowerCase();
    const action = { y: () => answer("yes"), n: () => answer("no"), s: () => answer("skip"), u: undo,
      backspace: undo }[key];
    if (action) {
      event.preventDefault();
      action();
    }
  }

  async function start() {
    try {
      state.me = await glide.getJson("/api/me");
    } catch (e) {
      only("signed-out");
      return;
    }
    glide.setCsrf(state.me.csrf);
    $("who").textContent = state.me.admin ? `${state.me.rater} (admin)` : state.me.rater;
    state.queue = localStorage.getItem(`glide-queue:${state.me.rater}`) || "";
    document.addEventListener("keydown", onKey);
    $("yes").addEventListener("click", () => answer("yes"));
    $("no").addEventListener("click", () => answer("no"));
    $("skip").addEventListener("click", () => answer("skip"));
    $("undo").addEventListener("click", undo);
    $("queue").addEventListener("change", async (event) => {
      state.queue = event.target.value;
      localStorage.setItem(`glide-queue:${state.me.rater}`, state.queue);
      event.target.blur();
      if (state.busy) return;
      state.busy = true;
      const query = state.queue ? `?queue=${encodeURIComponent(state.queue)}` : "";
      await show((await glide.getJson(`/api/next${query}`)).next);
    });
    await refreshProgress();
    let reply = null;
    if (box.entries().length) {   // answers a reload or a crash left unconfirmed go first
      try {
        reply = await box.flush();
      } catch (e) {
        return;
      }
      status("Answers from before the reload are saved.", "");
    }
    const query = state.queue ? `?queue=${encodeURIComponent(state.queue)}` : "";
    for (let attempt = 1; !reply; attempt++) {
      try {
        reply = await glide.getJson(`/api/next${query}`);
      } catch (e) {
        status(`Cannot reach the server (${e.message}); trying again.`, "warn");
        await glide.sleep(Math.min(500 * attempt, 3000));
      }
    }
    await show(reply.next);
  }

  start();
})();
