/* The account page: "Add a passkey" (the browser's prompt opens at once; the new passkey's name
   can be changed afterwards, in place), and re-authentication with a passkey. */
(function () {
  "use strict";
  var G = window.Gatehouse;
  var live = document.getElementById("live");
  var say = function (key) {
    return (live && live.getAttribute("data-" + key)) || "";
  };

  function askReauth(message) {
    var section = document.getElementById("reauth");
    if (!section) return;
    section.hidden = false;
    G.error(message);
    var field = document.getElementById("reauth-password");
    if (field) field.focus();
  }

  function showCodes(codes) {
    var box = document.getElementById("recovery-codes-box");
    var list = document.getElementById("recovery-codes");
    if (!box || !list || !codes || !codes.length) return;
    list.textContent = "";
    codes.forEach(function (code) {
      var item = document.createElement("li");
      var text = document.createElement("code");
      text.textContent = code;
      item.appendChild(text);
      list.appendChild(item);
    });
    box.hidden = false;
    var left = document.getElementById("recovery-left");
    if (left) left.hidden = true; // it told of the codes before these
  }

  function addRow(passkey) {
    var template = document.getElementById("passkey-template");
    var list = document.getElementById("passkey-list");
    if (!template || !list) return null;
    var row = template.content.firstElementChild.cloneNode(true);
    var id = passkey.id;
    row.id = "passkey-" + id;
    row.setAttribute("data-passkey-id", id);
    row.querySelector("form.passkey-rename").action = "/ui/account/passkeys/" + id + "/rename";
    row.querySelector("form.passkey-remove").action = "/ui/account/passkeys/" + id + "/remove";
    var label = row.querySelector("label");
    var input = row.querySelector("input[name=name]");
    label.htmlFor = input.id = "passkey-name-" + id;
    input.value = passkey.name;
    var dates = row.querySelector(".passkey-dates");
    if (dates) dates.textContent = G.fill(list.getAttribute("data-added"), { date: passkey.created });
    list.appendChild(row);
    var none = document.getElementById("passkey-none");
    if (none) none.hidden = true;
    return input;
  }

  // Codes shown once (a set-up just confirmed, or replaced): where the eye should go.
  var shown = document.getElementById("recovery-codes-box");
  if (shown && !shown.hidden) {
    shown.scrollIntoView({ block: "center" });
    shown.focus({ preventScroll: true });
  }

  var add = document.getElementById("passkey-add");
  if (add && G.supportsPasskeys()) {
    add.hidden = false;
    add.addEventListener("click", async function () {
      add.disabled = true;
      try {
        var started = await G.api("/ui/api/passkeys/options", {});
        if (!started.ok) {
          if (started.body.code === "reauth_required") askReauth(started.body.message);
          else G.error(started.body.message || say("err_unexpected"));
          return;
        }
        var credential;
        try {
          credential = await G.createPasskey(started.body.data.options);
        } catch (e) {
          G.error(say("err_passkey_cancelled"));
          return;
        }
        var done = await G.api("/ui/api/passkeys", {
          flow_id: started.body.data.flow_id,
          credential: credential,
        });
        if (!done.ok) {
          G.error(done.body.message || say("err_unexpected"));
          return;
        }
        var input = addRow(done.body.data.passkey);
        showCodes(done.body.data.recovery_codes);
        G.message(say("n_passkey_added"));
        if (input) {
          input.focus();
          input.select();
        }
      } finally {
        add.disabled = false;
      }
    });
  }

  var reauth = document.getElementById("reauth-passkey");
  if (reauth && G.supportsPasskeys()) {
    reauth.hidden = false;
    reauth.addEventListener("click", async function () {
      reauth.disabled = true;
      try {
        var started = await G.api("/ui/api/reauth/options", {});
        if (!started.ok) {
          G.error(started.body.message || say("err_unexpected"));
          return;
        }
        var credential;
        try {
          credential = await G.getPasskey(started.body.data.options);
        } catch (e) {
          G.error(say("err_passkey_cancelled"));
          return;
        }
        var done = await G.api("/ui/api/reauth", {
          flow_id: started.body.data.flow_id,
          credential: credential,
        });
        if (!done.ok) {
          G.error(done.body.message || say("err_unexpected"));
          return;
        }
        window.location.assign("/ui/account?notice=n_reauthed");
      } finally {
        reauth.disabled = false;
      }
    });
  }
})();
