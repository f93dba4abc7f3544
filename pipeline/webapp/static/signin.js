// The link's token is in the #fragment (never sent to a server in a URL): post it once, then forget it.
"use strict";

(async () => {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  // ?next=/compare: go on to the comparison page (only our own pages, never an address from the link)
  const next = { "/compare": "/compare" }[new URLSearchParams(location.search).get("next")];
  history.replaceState(null, "", "/signin");
  const message = document.getElementById("message");
  if (!token) {
    message.textContent = "This address has no sign-in token. Open the whole link you were given.";
    return;
  }
  const cookie = document.cookie.split("; ").find((c) => c.startsWith("glide_signin="));
  glide.setCsrf(cookie ? cookie.slice("glide_signin=".length) : "");
  try {
    const me = await glide.postReliably("/api/signin", { token });
    location.replace(next || (me.admin ? "/admin" : "/"));
  } catch (e) {
    message.textContent = `Sign-in refused: ${e.message}`;
  }
})();
