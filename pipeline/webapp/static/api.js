// What the pages share: JSON calls with the CSRF header, and sending a POST until the server has it.
"use strict";

const glide = (() => {
  let csrf = "";

  class Refused extends Error {
    constructor(status, detail) {
      super(detail || `refused (${status})`);
      this.status = status;
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // 32 random hex characters; crypto.getRandomValues works on plain http too (randomUUID does not).
  function newId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      headers["X-CSRF-Token"] = csrf;
    }
    return fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  async function detail(response) {
    try {
      const data = await response.json();
      return typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    } catch (e) {
      return response.statusText;
    }
  }

  async function getJson(path) {
    const response = await call("GET", path);
    if (!response.ok) throw new Refused(response.status, await detail(response));
    return response.json();
  }

  // POST until the server answers: a network error, a 5xx or a 429 is retried with the same body (its
  // client id makes a resend harmless); any other refusal is thrown.
  async function postReliably(path, body, onRetry) {
    let wait = 200;
    for (let attempt = 1; ; attempt++) {
      let response = null;
      try {
        response = await call("POST", path, body);
      } catch (e) {
        response = null;
      }
      if (response && response.ok) return response.json();
      if (response && response.status < 500 && response.status !== 429 && response.status !== 408) {
        throw new Refused(response.status, await detail(response));
      }
      if (onRetry) onRetry(response ? `the server answered ${response.status}` : "the server is unreachable", attempt);
      await sleep(wait);
      wait = Math.min(wait * 2, 3000);
    }
  }

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  // Entries (path, body with a client_id) kept in localStorage under `key` until the server confirms
  // them: a keypress is stored on this device before its request leaves, and a reload, a dropped
  // connection or a restarted server resends what is left, in order, under the same client ids.
  // `status(text, kind)` tells the rater; a refusal that `keep(e)` says is not the entry's fault
  // (signed out, a stale page) stops the flush with the entry kept; any other refusal drops it.
  function outbox(key, status, keep) {
    const entries = () => {
      try {
        return JSON.parse(localStorage.getItem(key()) || "[]");
      } catch (e) {
        return [];
      }
    };
    const save = (list) => localStorage.setItem(key(), JSON.stringify(list));
    async function flush() {   // the last reply (it names what to show next)
      let reply = null;
      for (let list = entries(); list.length; list = entries()) {
        const entry = list[0];
        try {
          reply = await postReliably(entry.path, entry.body, (why, attempt) =>
            status(`Not saved yet: ${why}. Retrying (attempt ${attempt}); keep this page open.`, "warn"));
        } catch (e) {
          if (keep(e)) {
            status(`Not saved: ${e.message}`, "error");
            throw e;
          }
          status(`The server refused it (${e.message}); it was dropped.`, "error");
        }
        save(entries().filter((other) => other.body.client_id !== entry.body.client_id));
      }
      return reply;
    }
    return { entries, add: (entry) => save([...entries(), entry]), flush };
  }

  // The admin pages' gate: the signed-in admin (its CSRF token set), or null once #refused says why not.
  async function signedInAdmin() {
    const refuse = (why) => {
      document.getElementById("refused-why").textContent = why;
      document.getElementById("refused").hidden = false;
      return null;
    };
    let me;
    try {
      me = await getJson("/api/me");
    } catch (e) {
      return refuse("Not signed in: open the admin link `glide serve --admin` printed.");
    }
    if (!me.admin) return refuse(`${me.rater} is a rater, not an admin: the admin link comes from glide serve --admin.`);
    csrf = me.csrf;
    return me;
  }

  return {
    Refused, sleep, newId, call, getJson, postReliably, el, outbox, signedInAdmin,
    setCsrf(token) { csrf = token; },
  };
})();
