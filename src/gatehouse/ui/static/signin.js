/* Sign-in with a passkey: passwordless (#passkey-signin), or as the second step of a password
   sign-in (#mfa-passkey, with its mfa_token). The browser's prompt opens on the click. */
(function () {
  "use strict";
  var G = window.Gatehouse;
  var area = document.getElementById("passkey-area");
  if (!area || !G.supportsPasskeys()) return;
  var button = document.getElementById("passkey-signin") || document.getElementById("mfa-passkey");
  if (!button) return;
  area.hidden = false;

  button.addEventListener("click", async function () {
    var mfaToken = button.getAttribute("data-mfa-token");
    button.disabled = true;
    try {
      var started = await G.api(
        "/ui/api/passkeys/signin/options",
        mfaToken ? { mfa_token: mfaToken } : {}
      );
      if (!started.ok) {
        G.error(started.body.message || area.getAttribute("data-failed"));
        return;
      }
      var credential;
      try {
        credential = await G.getPasskey(started.body.data.options);
      } catch (e) {
        G.error(area.getAttribute("data-cancelled"));
        return;
      }
      var payload = {
        flow_id: started.body.data.flow_id,
        credential: credential,
        return_to: button.getAttribute("data-return-to") || null,
      };
      if (mfaToken) payload.mfa_token = mfaToken;
      var path = mfaToken ? "/ui/api/signin/mfa/passkey" : "/ui/api/passkeys/signin";
      var done = await G.api(path, payload);
      if (!done.ok) {
        G.error(done.body.message || area.getAttribute("data-failed"));
        return;
      }
      window.location.assign(done.body.data.redirect);
    } finally {
      button.disabled = false;
    }
  });
})();
