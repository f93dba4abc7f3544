// The admin page: everything from /api/admin/*, rendered with textContent only (names, queries and
// captions are untrusted text).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = glide.el;
  const kappa = (k) => (k === null || k === undefined ? "n/a" : k.toFixed(2));

  function meter(done, total) {
    const cell = el("td");
    const bar = el("span", null, { class: "meter" });
    const fill = el("span");
    fill.style.width = `${total ? (100 * done) / total : 0}%`;
    bar.append(fill);
    cell.append(bar, document.createTextNode(`${done} / ${total}`));
    return cell;
  }

  function row(cells) {
    const tr = el("tr");
    for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
    return tr;
  }

  function num(value) {
    return el("td", value, { class: "num" });
  }

  function render(data) {
    $("queues").tBodies[0].replaceChildren(...data.queues.map((q) => row([
      q.name, q.filter, q.kind, q.picked_by, num(q.labels_per_item),
      meter(q.answered, q.items)])));
    $("raters").tBodies[0].replaceChildren(...data.raters.map((r) => row([
      r.name, num(r.labels), num(r.median_s === null ? "" : r.median_s.toFixed(1)),
      r.gold.map((g) => `${g.filter}: ${g.correct} of ${g.answered}`).join(", ") || "none answered yet",
      r.revoked ? "revoked" : r.admin ? "admin" : ""])));
    const blocks = data.agreement.map((a) => {
      const block = el("div");
      block.append(el("h3", `${a.filter}: Fleiss' kappa ${kappa(a.fleiss)} over ${a.items} pairs, ${a.raters} raters`));
      if (a.pairs.length) {
        const table = el("table");
        table.append(row([el("th", "rater"), el("th", "rater"), el("th", "shared pairs", { class: "num" }),
          el("th", "Cohen's kappa", { class: "num" })]));
        for (const p of a.pairs) table.append(row([p.a, p.b, num(p.shared), num(kappa(p.kappa))]));
        block.append(table);
      }
      return block;
    });
    $("agreement").replaceChildren(...(blocks.length ? blocks : [el("p", "No labels yet.")]));
    const gold = Object.entries(data.gold).map(([f, n]) => `${n} gold items for ${f}`).join(", ");
    $("source").textContent = (data.dataset ? `Pairs come from ${data.dataset}.` : "No --dataset: queues cannot be made here.")
      + (data.filters ? ` Current filters: ${data.filters}.` : " No --filters: no active-learning queues.")
      + (gold ? ` ${gold}.` : " No gold items yet.");
    const filters = [...new Set([...data.queues.map((q) => q.filter), ...data.agreement.map((a) => a.filter)])];
    const links = [["all filters", "/api/admin/export"], ...filters.map((f) => [f, `/api/admin/export?filter=${encodeURIComponent(f)}`])];
    $("exports").replaceChildren(...links.flatMap(([label, href]) => [el("a", `${label} (CSV)`, { href, class: "button", download: "" }),
      document.createTextNode(" ")]));
  }

  async function load() {
    render(await glide.getJson("/api/admin/overview"));
  }

  async function createQueue(event) {
    event.preventDefault();
    const form = new FormData(event.target);
    const body = { kind: form.get("kind"), filter: form.get("filter"), n: Number(form.get("n")),
      labels_per_item: Number(form.get("labels_per_item")) };
    if (form.get("query")) body.query = form.get("query");
    if (form.get("seed")) body.seed = Number(form.get("seed"));
    $("queue-status").textContent = "picking pairs…";
    try {
      const reply = await glide.postReliably("/api/admin/queues", body);
      $("queue-status").textContent = `Created ${reply.queue.name} with ${reply.queue.items} pairs.`;
      await load();
    } catch (e) {
      $("queue-status").textContent = `Not created: ${e.message}`;
    }
  }

  async function start() {
    const me = await glide.signedInAdmin();
    if (!me) return;
    $("who").textContent = `${me.rater} (admin)`;
    $("admin").hidden = false;
    $("new-queue").addEventListener("submit", createQueue);
    await load();
    document.body.dataset.loaded = "1";
  }

  start();
})();
