/* Passkeys in the browser: WebAuthn's JSON forms (base64url strings, as the server sends and
   expects them) to and from the ArrayBuffers navigator.credentials speaks. */
(function () {
  "use strict";
  var G = (window.Gatehouse = window.Gatehouse || {});

  function toBytes(text) {
    var base64 = String(text).replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (d) {
      var descriptor = { type: d.type, id: toBytes(d.id) };
      if (d.transports) descriptor.transports = d.transports;
      return descriptor;
    });
  }

  G.supportsPasskeys = function () {
    return !!(window.PublicKeyCredential && navigator.credentials && navigator.credentials.get);
  };

  /* PublicKeyCredentialCreationOptionsJSON -> the options of navigator.credentials.create. */
  G.creationOptions = function (json) {
    var options = Object.assign({}, json);
    options.challenge = toBytes(json.challenge);
    options.user = Object.assign({}, json.user, { id: toBytes(json.user.id) });
    if (json.excludeCredentials) options.excludeCredentials = descriptors(json.excludeCredentials);
    return options;
  };

  /* PublicKeyCredentialRequestOptionsJSON -> the options of navigator.credentials.get. */
  G.requestOptions = function (json) {
    var options = Object.assign({}, json);
    options.challenge = toBytes(json.challenge);
    if (json.allowCredentials) options.allowCredentials = descriptors(json.allowCredentials);
    return options;
  };

  /* A PublicKeyCredential -> RegistrationResponseJSON or AuthenticationResponseJSON. */
  G.credentialJSON = function (credential) {
    var response = credential.response;
    var json = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults
        ? credential.getClientExtensionResults()
        : {},
      response: { clientDataJSON: toText(response.clientDataJSON) },
    };
    if (credential.authenticatorAttachment) {
      json.authenticatorAttachment = credential.authenticatorAttachment;
    }
    if (response.attestationObject) {
      json.response.attestationObject = toText(response.attestationObject);
      if (response.getTransports) json.response.transports = response.getTransports();
    } else {
      json.response.authenticatorData = toText(response.authenticatorData);
      json.response.signature = toText(response.signature);
      if (response.userHandle) json.response.userHandle = toText(response.userHandle);
    }
    return json;
  };

  G.getPasskey = async function (optionsJSON) {
    var credential = await navigator.credentials.get({ publicKey: G.requestOptions(optionsJSON) });
    return G.credentialJSON(credential);
  };

  G.createPasskey = async function (optionsJSON) {
    var credential = await navigator.credentials.create({
      publicKey: G.creationOptions(optionsJSON),
    });
    return G.credentialJSON(credential);
  };
})();
