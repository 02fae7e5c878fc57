/* Gatehouse's pages: what every page's script shares. Native browser APIs only (fetch, DOM). */
(function () {
  "use strict";
  var G = (window.Gatehouse = window.Gatehouse || {});

  /* The CSRF token of this page's browser session, from its <meta>. */
  G.csrf = function () {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  };

  /* A call to the pages' own JSON API: {ok, status, body}; never throws. */
  G.api = async function (path, body, method) {
    var init = {
      method: method || "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": G.csrf() },
    };
    if (init.method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body || {});
    }
    var response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      return { ok: false, status: 0, body: { code: "network", message: "" } };
    }
    var data = {};
    try {
      data = await response.json();
    } catch (e) {
      data = {};
    }
    return { ok: response.ok, status: response.status, body: data };
  };

  /* Show `text` in the element `id` (hidden when empty). */
  G.say = function (id, text) {
    var element = document.getElementById(id);
    if (!element) return;
    element.textContent = text || "";
    element.hidden = !text;
  };
  G.message = function (text) {
    G.say("error", "");
    G.say("message", text);
  };
  G.error = function (text) {
    G.say("message", "");
    G.say("error", text);
  };

  /* "Sent by {channel}" with its fields filled. */
  G.fill = function (text, fields) {
    return String(text || "").replace(/\{(\w+)\}/g, function (_, key) {
      return fields[key] !== undefined ? String(fields[key]) : "";
    });
  };
})();
