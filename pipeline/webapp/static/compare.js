// The comparison page: two images for one caption and one question; keys ← / → (or 1 / 2), t, b and
// u (undo).
//
// As on the labelling page no vote is lost: a keypress becomes an outbox entry with a fresh client id,
// kept in localStorage and sent (and resent, same id) until the server confirms it; only then does the
// next pair show. The caption is untrusted text: it goes on the page with textContent only. The page
// never learns which model made which image: it gets a pair id and two image addresses by side.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { me: null, pair: null, busy: true, run: "", runs: [] };
  const outboxKey = () => `glide-compare-outbox:${state.me.rater}`;
  const runParam = () => (state.run ? Number(state.run) : null);

  function status(text, kind) {
    $("status").textContent = text;
    $("status").dataset.kind = kind || "";
  }

  function only(section) {
    for (const id of ["signed-out", "done", "work"]) $(id).hidden = id !== section;
  }

  async function show(pair) {
    state.pair = pair;
    const work = $("work");
    delete work.dataset.pair;
    if (!pair) {
      only("done");
      state.busy = false;
      refreshProgress();
      return;
    }
    only("work");
    $("question").textContent = pair.question_text;
    $("caption").textContent = pair.caption || "(no caption)";
    const images = [$("left"), $("right")];
    images[0].src = pair.left;
    images[1].src = pair.right;
    await Promise.all(images.map((img) => img.decode().catch(() => status("An image did not load.", "warn"))));
    work.dataset.pair = String(pair.id);   // the pair on screen is ready for a key
    state.busy = false;
    refreshProgress();
  }

  // kept: signed out, or a page whose CSRF token went stale; dropped: e.g. a pair not handed to them
  const box = glide.outbox(outboxKey, status,
    (e) => e.status === 401 || (e.status === 403 && /CSRF|sign/.test(e.message)));

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
    if (entry.path === "/api/compare/undo") {
      status(reply && reply.undone ? "Undid your last vote. Answer this pair again." : "Nothing left to undo.", "");
    } else if ($("status").dataset.kind !== "error") {
      status("", "");
    }
    await show(reply ? reply.next : state.pair);
  }

  function choose(choice) {
    if (state.busy || !state.pair) return;
    send({ path: "/api/compare/votes", body: { client_id: glide.newId(), pair_id: state.pair.id, choice,
      created: new Date().toISOString(), run: runParam() } });
  }

  function undo() {
    if (state.busy) return;
    send({ path: "/api/compare/undo", body: { client_id: glide.newId(), run: runParam() } });
  }

  async function refreshProgress() {
    try {
      state.runs = (await glide.getJson("/api/compare/progress")).runs;
    } catch (e) {
      return;
    }
    const select = $("run");
    const chosen = state.run;
    select.replaceChildren(glide.el("option", "any with work", { value: "" }));
    for (const r of state.runs) {
      select.append(glide.el("option", `run ${r.id}: ${r.question}`, { value: String(r.id) }));
    }
    select.value = state.runs.some((r) => String(r.id) === chosen) ? chosen : "";
    const id = state.pair ? String(state.pair.run) : state.run;
    const r = state.runs.find((x) => String(x.id) === id);
    if (!r) {
      $("progress").textContent = "";
      $("progressfill").style.width = "0";
      return;
    }
    const cap = r.cap ? ` of at most ${r.cap}` : "";
    $("progress").textContent = `run ${r.id}: ${r.votes} of ${r.votes_wanted} votes in · yours: ${r.mine}${cap}`;
    $("progressfill").style.width = `${r.votes_wanted ? Math.min(100, (100 * r.votes) / r.votes_wanted) : 0}%`;
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.target instanceof HTMLSelectElement || event.target instanceof HTMLInputElement) return;
    const action = {
      arrowleft: () => choose("left"), 1: () => choose("left"), arrowright: () => choose("right"),
      2: () => choose("right"), t: () => choose("tie"), b: () => choose("both_bad"), u: undo, backspace: undo,
    }[event.key.toLowerCase()];
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
    $("who").textContent = state.me.rater;
    state.run = localStorage.getItem(`glide-compare-run:${state.me.rater}`) || "";
    document.addEventListener("keydown", onKey);
    for (const choice of ["left", "right", "tie", "both_bad"]) {
      $(`choose-${choice}`).addEventListener("click", (event) => { event.currentTarget.blur(); choose(choice); });
    }
    $("undo").addEventListener("click", (event) => { event.currentTarget.blur(); undo(); });
    $("run").addEventListener("change", async (event) => {
      state.run = event.target.value;
      localStorage.setItem(`glide-compare-run:${state.me.rater}`, state.run);
      event.target.blur();
      if (state.busy) return;
      state.busy = true;
      const query = state.run ? `?run=${encodeURIComponent(state.run)}` : "";
      await show((await glide.getJson(`/api/compare/next${query}`)).next);
    });
    let reply = null;
    if (box.entries().length) {   // votes a reload or a crash left unconfirmed go first
      try {
        reply = await box.flush();
      } catch (e) {
        return;
      }
      status("Votes from before the reload are saved.", "");
    }
    const query = state.run ? `?run=${encodeURIComponent(state.run)}` : "";
    for (let attempt = 1; !reply; attempt++) {
      try {
        reply = await glide.getJson(`/api/compare/next${query}`);
      } catch (e) {
        status(`Cannot reach the server (${e.message}); trying again.`, "warn");
        await glide.sleep(Math.min(500 * attempt, 3000));
      }
    }
    await show(reply.next);
  }

  start();
})();
